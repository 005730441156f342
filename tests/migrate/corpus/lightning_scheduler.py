"""Wine with a StepLR returned from configure_optimizers (left on Lightning, reported)."""
import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
train = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32, shuffle=True)


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.fc(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2)}


torch.manual_seed(0)
net = Net()
trainer = pl.Trainer(max_epochs=4, enable_progress_bar=False, logger=False, enable_checkpointing=False)
trainer.fit(net, train)
print("final accuracy:", (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
