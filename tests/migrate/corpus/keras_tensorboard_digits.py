"""Keras with the TensorBoard callback and a history read, flattened digits."""
import tempfile

import keras
from keras import layers
from sklearn.datasets import load_digits

keras.utils.set_random_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
model = keras.Sequential([keras.Input(shape=(64,)), layers.Dense(32, activation="relu"),
                          layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x[:1400], y[:1400], epochs=4, batch_size=32, validation_data=(x[1400:], y[1400:]),
                    callbacks=[keras.callbacks.TensorBoard(log_dir=tempfile.mkdtemp())], verbose=0)
print("final accuracy:", history.history["val_accuracy"][-1])
