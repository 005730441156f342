"""Digits with an Ignite Engine around a hand-written step (custom step logic: reported, not rewritten)."""
import numpy as np
import torch
from ignite.engine import Engine, Events
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=64, shuffle=True)
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)


def train_step(engine, batch):
    model.train()
    inputs, targets = batch
    optimizer.zero_grad()
    # label smoothing: a custom objective
    loss = nn.functional.cross_entropy(model(inputs), targets, label_smoothing=0.1)
    loss.backward()
    optimizer.step()
    return loss.item()


trainer = Engine(train_step)


@trainer.on(Events.EPOCH_COMPLETED)
def report(engine):
    print("epoch", engine.state.epoch, "loss", round(engine.state.output, 4))


trainer.run(loader, max_epochs=3)
with torch.no_grad():
    acc = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
print("final accuracy:", acc)
