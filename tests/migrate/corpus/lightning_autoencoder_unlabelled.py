"""An autoencoder in the shape of Lightning's autoencoder example: unlabelled batches (no targets)."""
import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader

pl.seed_everything(0)
x, _ = load_digits(return_X_y=True)
x = torch.from_numpy((x / 16.0).astype(np.float32))
train = DataLoader(x[:1400], batch_size=64, shuffle=True)
val = DataLoader(x[1400:], batch_size=256)


class AutoEncoder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
        self.decoder = nn.Linear(16, 64)

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def training_step(self, batch, batch_idx):
        return ((self(batch) - batch) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_mse", ((self(batch) - batch) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


model = AutoEncoder()
trainer = pl.Trainer(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, logger=False,
                     enable_checkpointing=False)
trainer.fit(model, train, val)
print("final mse:", float(trainer.callback_metrics["val_mse"]))
