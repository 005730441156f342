import argparse

import pytorch_lightning as pl

from mypkg import LitModel, loaders

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

model = LitModel()
train_loader, val_loader = loaders()
# every Trainer argument the tool maps
trainer = pl.Trainer(
    max_epochs=args.epochs,
    accelerator="cpu",
    devices=1,
    strategy="auto",
    precision="bf16-mixed",
    accumulate_grad_batches=2,
    gradient_clip_val=0.5,
    log_every_n_steps=5,
    enable_progress_bar=False,
    default_root_dir="outputs",
    deterministic=True,
    gpus=0,
    limit_train_batches=10,
)
trainer.fit(model, train_loader, val_loader)  # train
