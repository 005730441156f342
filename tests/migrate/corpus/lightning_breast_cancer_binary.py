"""Breast cancer, binary: one logit, BCE with logits, a step budget instead of epochs."""
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

x, y = load_breast_cancer(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
y = y.astype(np.float32)
train = DataLoader(TensorDataset(torch.from_numpy(x[:450]), torch.from_numpy(y[:450])), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(torch.from_numpy(x[450:]), torch.from_numpy(y[450:])), batch_size=128)


class Binary(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        self.loss = nn.BCEWithLogitsLoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss(self(x).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logit = self(x).squeeze(1)
        self.log("val_loss", self.loss(logit, y))
        self.log("val_acc", ((logit > 0).float() == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


torch.manual_seed(0)
model = Binary()
checkpoint = ModelCheckpoint(dirpath="ckpts", monitor="val_loss", mode="min", save_top_k=1)
trainer = pl.Trainer(max_steps=60, precision="32", deterministic=True, log_every_n_steps=10,
                     callbacks=[checkpoint], enable_progress_bar=False, logger=False)
trainer.fit(model, train, val)
print("final accuracy:", float(trainer.callback_metrics["val_acc"]))
