"""Iris with Lightning."""
import numpy as np
import torch
import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from sklearn.datasets import load_iris

pl.seed_everything(0)
x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
idx = np.random.default_rng(0).permutation(len(x))
tr, va = idx[:120], idx[120:]
train_loader = DataLoader(TensorDataset(torch.tensor(x[tr]), torch.tensor(y[tr])), batch_size=16, shuffle=True)
val_loader = DataLoader(TensorDataset(torch.tensor(x[va]), torch.tensor(y[va])), batch_size=32)


class IrisModel(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        loss = F.cross_entropy(self(xb), yb)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        xb, yb = batch
        logits = self(xb)
        self.log("val_loss", F.cross_entropy(logits, yb))
        self.log("val_acc", (logits.argmax(1) == yb).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


model = IrisModel()
early = EarlyStopping(monitor="val_loss", patience=5)
# train for a few epochs
trainer = pl.Trainer(
    max_epochs=8,
    accelerator="cpu",  # train on the CPU
    callbacks=[early, ModelCheckpoint(monitor="val_acc", mode="max")],
    logger=CSVLogger("lightning_logs_iris"),
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(model, train_loader, val_loader)
print("final accuracy:", float(trainer.callback_metrics["val_acc"]))
print("val_loss", trainer.callback_metrics["val_loss"].item())
