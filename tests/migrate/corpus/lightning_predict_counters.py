"""Iris: predict after fit, and read the trainer's counters and metrics with .get()."""
import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_iris
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
idx = np.random.default_rng(3).permutation(150)
fit_loader = DataLoader(TensorDataset(torch.from_numpy(x[idx[:110]]), torch.from_numpy(y[idx[:110]])), batch_size=10,
                        shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[idx[110:]]), torch.from_numpy(y[idx[110:]])), batch_size=40)
predict_loader = DataLoader(torch.from_numpy(x[idx[110:]]), batch_size=20)  # inputs only


class Lit(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.RMSprop(self.parameters(), lr=0.01)


pl.seed_everything(5)
lit = Lit()
trainer = pl.Trainer(max_epochs=4, enable_progress_bar=False, logger=False, enable_checkpointing=False)
trainer.fit(lit, fit_loader, val_loader)
print("epochs:", trainer.current_epoch, "steps:", trainer.global_step)
print("val loss:", trainer.callback_metrics.get("val_loss"))
print("final loss:", float(trainer.callback_metrics["val_loss"]))
outputs = trainer.predict(lit, dataloaders=predict_loader)
print("predicted batches:", len(outputs))
