"""Wine with Lightning imported under aliases; validate and test after fit."""
import numpy as np
import torch
from pytorch_lightning import LightningModule, seed_everything
from pytorch_lightning import Trainer as T
from pytorch_lightning.callbacks import EarlyStopping as ES
from sklearn.datasets import load_wine
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

seed_everything(1)
x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
order = np.random.default_rng(1).permutation(len(x))
parts = np.split(order, [120, 150])


def loader(i, shuffle=False):
    return DataLoader(TensorDataset(torch.from_numpy(x[i]), torch.from_numpy(y[i])), batch_size=16, shuffle=shuffle)


class WineNet(LightningModule):
    """A small MLP; Adam from configure_optimizers."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(13, 24), nn.Tanh(), nn.Linear(24, 3))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        return F.cross_entropy(self(inputs), target)

    def validation_step(self, batch, batch_idx):
        inputs, target = batch
        out = self(inputs)
        self.log("val_loss", F.cross_entropy(out, target))
        self.log("val_acc", (out.argmax(-1) == target).float().mean())

    def test_step(self, batch, batch_idx):
        inputs, target = batch
        self.log("test_acc", (self(inputs).argmax(-1) == target).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


net = WineNet()
trainer = T(max_epochs=6, accelerator="cpu", devices=1, callbacks=[ES("val_loss", patience=2)],
            enable_progress_bar=False, logger=False, enable_checkpointing=False)
trainer.fit(net, train_dataloaders=loader(parts[0], True), val_dataloaders=loader(parts[1]))
trainer.validate(net, dataloaders=loader(parts[1]))
results = trainer.test(net, dataloaders=loader(parts[2]))
print("final accuracy:", results[0]["test_acc"])
