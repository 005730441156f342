"""Lightning's image classifier example, flattened digits: checkpoint every 2 epochs, then test()."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl.seed_everything(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
train = DataLoader(TensorDataset(torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(torch.from_numpy(x[1200:1500]), torch.from_numpy(y[1200:1500])), batch_size=256)
test = DataLoader(TensorDataset(torch.from_numpy(x[1500:]), torch.from_numpy(y[1500:])), batch_size=256)


class LitClassifier(pl.LightningModule):
    def __init__(self, hidden_dim=64, learning_rate=0.01):
        super().__init__()
        self.l1 = nn.Linear(64, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, 10)
        self.learning_rate = learning_rate

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


checkpoint = ModelCheckpoint(monitor="val_loss", every_n_epochs=2, save_top_k=2)
trainer = pl.Trainer(max_epochs=4, callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                     logger=False)
model = LitClassifier()
trainer.fit(model, train, val)
result = trainer.test(model, dataloaders=test)
print("final accuracy:", result[0]["test_acc"])
