import keras
from keras.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TensorBoard

from mypkg import build, data
from unified import UnifiedTrainer

x, y, xv, yv = data()
model = build()


class Printer(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(epoch, logs)


# TODO(unified migrate): callbacks Printer() are not run by the facade: port them to unified.callbacks.Callback and pass UnifiedTrainer(..., callbacks=[...])
callbacks = [
    EarlyStopping(patience=3, restore_best_weights=True),
    ModelCheckpoint("best.keras", monitor="val_mae", save_best_only=True),
    ReduceLROnPlateau(factor=0.5, patience=1),
    CSVLogger("log.csv"),
    TensorBoard("tb"),
    Printer(),
]
trainer = UnifiedTrainer({
    "name": "keras_callbacks",
    "task": "regression",
    "metrics": ["mae"],
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "trainer": {"max_epochs": 20},
    "callbacks": [
        {"early_stopping": {"monitor": "val/loss", "mode": "min", "patience": 3, "restore_best_weights": True}},
        {"model_checkpoint": {"monitor": "val/mae", "mode": "min", "save_top_k": 1}},
    ],
    "logging": {"loggers": ["tensorboard"]},
    "scheduler": {
        "name": "reduce_on_plateau",
        "monitor": "val/loss",
        "mode": "min",
        "factor": 0.5,
        "patience": 1,
    },
}, backend="keras")
trainer.fit(model=model, data=((x, y), (xv, yv)))
