"""Ignite's MNIST example structure (RunningAverage, per-epoch logging handlers), flattened digits and an MLP."""
import numpy as np
import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss, RunningAverage
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])), batch_size=32,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[1400:]), torch.from_numpy(y[1400:])), batch_size=256)

model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
criterion = nn.CrossEntropyLoss()
trainer = create_supervised_trainer(model, optimizer, criterion)
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "nll": Loss(criterion)})
RunningAverage(output_transform=lambda x: x).attach(trainer, "loss")


@trainer.on(Events.EPOCH_COMPLETED)
def log_running_loss(engine):
    print(f"Epoch {engine.state.epoch} running loss {engine.state.metrics['loss']:.3f}")


def log_validation_results(engine):
    evaluator.run(val_loader)
    metrics = evaluator.state.metrics
    print(f"Validation Results - Epoch: {engine.state.epoch} Avg accuracy: {metrics['accuracy']:.3f} "
          f"Avg loss: {metrics['nll']:.3f}")


trainer.add_event_handler(Events.EPOCH_COMPLETED, log_validation_results)
trainer.run(train_loader, max_epochs=4)
print("final accuracy:", evaluator.state.metrics["accuracy"])
