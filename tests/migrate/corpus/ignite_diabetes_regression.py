"""Diabetes regression with Ignite: MSELoss, MeanAbsoluteError, SGD."""
import numpy as np
import torch
from ignite.engine import create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Loss, MeanAbsoluteError
from sklearn.datasets import load_diabetes
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_diabetes(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
y = ((y - y.mean()) / y.std()).astype(np.float32).reshape(-1, 1)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[:350]), torch.from_numpy(y[:350])), batch_size=32,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[350:]), torch.from_numpy(y[350:])), batch_size=100)
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
trainer = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), nn.MSELoss())
evaluator = create_supervised_evaluator(model, metrics={"mae": MeanAbsoluteError(), "mse": Loss(nn.MSELoss())})
trainer.run(train_loader, max_epochs=5)
evaluator.run(val_loader)
print("final mse:", evaluator.state.metrics["mse"])
