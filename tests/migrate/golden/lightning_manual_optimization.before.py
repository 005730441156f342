import pytorch_lightning as pl
import torch


class GAN(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.g = torch.nn.Linear(2, 2)

    def forward(self, z):
        return self.g(z)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self(batch[0]).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())


trainer = pl.Trainer(max_epochs=1)
trainer.fit(GAN(), torch.utils.data.DataLoader([(torch.zeros(2),)]))
