"""Keras: ModelCheckpoint to best_model.keras, ReduceLROnPlateau(min_lr), then load_model of that file."""
import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits

keras.utils.set_random_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
model = keras.Sequential([keras.Input(shape=(64,)), layers.Dense(64, activation="relu"),
                          layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
callbacks = [
    keras.callbacks.ModelCheckpoint("best_model.keras", save_best_only=True, monitor="val_loss"),
    keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_lr=1e-4),
]
model.fit(x_train, y_train, epochs=4, batch_size=32, validation_split=0.2, callbacks=callbacks, verbose=0)
best = keras.models.load_model("best_model.keras")
loss, acc = best.evaluate(x_test, y_test, verbose=0)
print(f"final accuracy: {acc:.4f}")
