"""Ignite's MNIST example (a convnet), on scikit-learn's 8x8 digits as a local stand-in."""
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])), batch_size=64,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[1400:]), torch.from_numpy(y[1400:])), batch_size=256)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc(x.flatten(1))


model = Net()
trainer = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss())
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "nll": Loss(nn.CrossEntropyLoss())})


@trainer.on(Events.EPOCH_COMPLETED)
def log_validation_results(engine):
    evaluator.run(val_loader)
    metrics = evaluator.state.metrics
    print(f"Validation Results - Epoch: {engine.state.epoch} Avg accuracy: {metrics['accuracy']:.2f}")


trainer.run(train_loader, max_epochs=3)
print("final accuracy:", evaluator.state.metrics["accuracy"])
