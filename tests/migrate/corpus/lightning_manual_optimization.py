"""Iris with Lightning manual optimization: a custom loop the migration must report, not rewrite."""
import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_iris
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=30, shuffle=True)


class Manual(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
model = Manual()
trainer = pl.Trainer(max_epochs=5, enable_progress_bar=False, logger=False, enable_checkpointing=False)
trainer.fit(model, loader)
acc = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
print("final accuracy:", acc)
