from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

from mypkg import LitModel, loaders


class PrintEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        print(trainer.current_epoch)


stopper = EarlyStopping(monitor="val_acc", mode="max", patience=4, min_delta=0.01)
trainer = Trainer(
    max_epochs=10,
    callbacks=[stopper, ModelCheckpoint(dirpath="ckpt", monitor="val_loss", save_top_k=2), LearningRateMonitor(),
               PrintEpoch()],
    logger=[CSVLogger("logs"), TensorBoardLogger("logs"), MLFlowLogger(experiment_name="exp",
                                                                       tracking_uri="file:./mlruns")],
)
trainer.fit(LitModel(), *loaders())
