"""The Lightning MNIST convnet example, on scikit-learn's 8x8 digits as a local stand-in (no download)."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl.seed_everything(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # N, C, H, W
train = DataLoader(TensorDataset(torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(torch.from_numpy(x[1400:]), torch.from_numpy(y[1400:])), batch_size=256)


class LitConvNet(pl.LightningModule):
    def __init__(self, lr=0.01):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.lr = lr

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc(x.flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


model = LitConvNet()
trainer = pl.Trainer(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, logger=False,
                     enable_checkpointing=False)
trainer.fit(model, train, val)
print("final accuracy:", float(trainer.callback_metrics["val_acc"]))
