
from mypkg import LitModel, loaders
from unified import UnifiedTrainer


def main():
    trainer = UnifiedTrainer({
        "name": "lightning_in_main_block",
        "trainer": {"max_epochs": 3, "progress_bar": False},
    }, backend="lightning")
    trainer.fit(model=LitModel(), data=loaders())
    metrics = trainer.result.metrics
    print(f"val acc {metrics['val/accuracy']:.3f}, val loss {metrics['val/loss']:.3f}")


if __name__ == "__main__":
    main()
