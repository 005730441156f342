import keras
from keras.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TensorBoard

from mypkg import build, data

x, y, xv, yv = data()
model = build()
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse", metrics=["mae"])


class Printer(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(epoch, logs)


callbacks = [
    EarlyStopping(patience=3, restore_best_weights=True),
    ModelCheckpoint("best.keras", monitor="val_mae", save_best_only=True),
    ReduceLROnPlateau(factor=0.5, patience=1),
    CSVLogger("log.csv"),
    TensorBoard("tb"),
    Printer(),
]
model.fit(x, y, validation_data=(xv, yv), epochs=20, callbacks=callbacks)
