import argparse

from mypkg import LitModel, loaders
from unified import UnifiedTrainer

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

model = LitModel()
train_loader, val_loader = loaders()
# every Trainer argument the tool maps
trainer = UnifiedTrainer({
    "name": "lightning_trainer_args",
    "trainer": {
        "max_epochs": args.epochs,
        "precision": "bf16-mixed",
        "accumulate_grad_batches": 2,
        "gradient_clip_norm": 0.5,
        "log_every_n_steps": 5,
        "progress_bar": False,
        "deterministic": True,
    },
    "logging": {"dir": "outputs"},
}, backend="lightning")
trainer.fit(model=model, data=(train_loader, val_loader))  # train
