import pytorch_lightning as pl

from mypkg import LitModel, loaders


def main():
    trainer = pl.Trainer(max_epochs=3, enable_progress_bar=False)
    trainer.fit(LitModel(), *loaders())
    metrics = trainer.callback_metrics
    print(f"val acc {metrics['val_acc']:.3f}, val loss {metrics['val_loss']:.3f}")


if __name__ == "__main__":
    main()
