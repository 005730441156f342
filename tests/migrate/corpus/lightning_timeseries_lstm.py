"""Sequence classification with an LSTM (N-D inputs: batch, time, features) on a synthetic sine dataset."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl.seed_everything(0)
rng = np.random.default_rng(0)
t = np.linspace(0, 4 * np.pi, 24, dtype=np.float32)
freq = rng.integers(0, 2, 600)
x = np.sin(t[None, :] * (1 + freq[:, None])) + 0.3 * rng.standard_normal((600, 24)).astype(np.float32)
x = x.astype(np.float32)[:, :, None]  # (N, T, 1)
train = DataLoader(TensorDataset(torch.from_numpy(x[:500]), torch.from_numpy(freq[:500])), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(torch.from_numpy(x[500:]), torch.from_numpy(freq[500:])), batch_size=100)


class LSTMClassifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.02)


trainer = pl.Trainer(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, logger=False,
                     enable_checkpointing=False)
model = LSTMClassifier()
trainer.fit(model, train, val)
print("final accuracy:", float(trainer.callback_metrics["val_acc"]))
