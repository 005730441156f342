"""Iris written for Lightning 1.x: gpus= and a progress-bar refresh rate (not accepted by Lightning 2)."""
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from sklearn.datasets import load_iris
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
train_loader = DataLoader(data, batch_size=16, shuffle=True)
val_loader = DataLoader(data, batch_size=150)


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.02)


trainer = pl.Trainer(gpus=0, max_epochs=5, callbacks=[TQDMProgressBar(refresh_rate=10)],
                     num_sanity_val_steps=0, gradient_clip_val=1.0)
trainer.fit(Model(), train_loader, val_loader)
print("final loss:", trainer.callback_metrics["val_loss"].item())
