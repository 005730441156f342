from pytorch_lightning.callbacks import Callback

from mypkg import LitModel, loaders
from unified import UnifiedTrainer


class PrintEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        print(trainer.current_epoch)
# TODO(unified migrate): callback PrintEpoch() is not run by the facade: port it to a unified.callbacks.Callback, pass UnifiedTrainer(..., callbacks=[...])
trainer = UnifiedTrainer({
    "name": "lightning_callbacks_loggers",
    "trainer": {"max_epochs": 10},
    "callbacks": [
        {"early_stopping": {"monitor": "val/accuracy", "mode": "max", "patience": 4, "min_delta": 0.01}},
        {"model_checkpoint": {"monitor": "val/loss", "mode": "min", "save_top_k": 2}},
        {"lr_monitor": {}},
    ],
    "logging": {
        "dir": "logs",
        "loggers": ["tensorboard", "mlflow"],
        "mlflow": {"tracking_uri": "file:./mlruns", "experiment": "exp"},
    },
}, backend="lightning")
trainer.fit(model=LitModel(), data=loaders())
