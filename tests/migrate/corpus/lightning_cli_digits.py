"""LightningCLI in the shape of Lightning's cli examples, on scikit-learn digits (run with no arguments)."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LightningCLI
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class DigitsData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 64):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        self.train = TensorDataset(torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400]))
        self.val = TensorDataset(torch.from_numpy(x[1400:]), torch.from_numpy(y[1400:]))

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=256)


class DigitsModel(pl.LightningModule):
    def __init__(self, hidden: int = 64, lr: float = 0.01):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


if __name__ == "__main__":
    torch.manual_seed(0)
    cli = LightningCLI(DigitsModel, DigitsData, run=False, args=[],
                       trainer_defaults={"max_epochs": 3, "enable_progress_bar": False, "logger": False,
                                         "enable_checkpointing": False, "enable_model_summary": False})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print("final accuracy:", float(cli.trainer.callback_metrics["val_acc"]))
