"""A GAN in the shape of Lightning's basic_gan example (manual optimization), on 8x8 digits as flat vectors."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl.seed_everything(0)
x, _ = load_digits(return_X_y=True)
x = (x / 8.0 - 1.0).astype(np.float32)
loader = DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=128, shuffle=True)


class GAN(pl.LightningModule):
    def __init__(self, latent=16):
        super().__init__()
        self.automatic_optimization = False
        self.latent = latent
        self.generator = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh())
        self.discriminator = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.latent)
        fake = self(z)
        ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        d_loss = (F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)) / 2
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.log("d_loss", d_loss)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.generator.parameters(), lr=2e-3),
                torch.optim.Adam(self.discriminator.parameters(), lr=2e-3)]


model = GAN()
trainer = pl.Trainer(max_epochs=3, enable_progress_bar=False, enable_model_summary=False, logger=False,
                     enable_checkpointing=False)
trainer.fit(model, loader)
print("final d_loss:", float(trainer.callback_metrics["d_loss"]))
