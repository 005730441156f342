"""Breast cancer with Ignite: one logit, BCEWithLogitsLoss, early stopping on the validation loss."""
import numpy as np
import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import EarlyStopping
from ignite.metrics import Accuracy, Loss
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(4)
x, y = load_breast_cancer(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
y = y.astype(np.float32).reshape(-1, 1)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[:450]), torch.from_numpy(y[:450])), batch_size=32,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[450:]), torch.from_numpy(y[450:])), batch_size=128)
model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
criterion = nn.BCEWithLogitsLoss()
trainer = create_supervised_trainer(model, torch.optim.Adam(model.parameters(), lr=0.003), criterion)
evaluator = create_supervised_evaluator(model, metrics={
    "acc": Accuracy(output_transform=lambda out: ((out[0] > 0).float(), out[1])),
    "bce": Loss(criterion),
})
stopper = EarlyStopping(patience=2, score_function=lambda e: -e.state.metrics["bce"], trainer=trainer)
evaluator.add_event_handler(Events.COMPLETED, stopper)
trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run(val_loader))
trainer.run(train_loader, max_epochs=4)
evaluator.run(val_loader)
print("final accuracy:", evaluator.state.metrics["acc"])
