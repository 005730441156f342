"""Keras's timeseries classification example (Conv1D on 3-D arrays: samples, steps, channels), synthetic data."""
import keras
import numpy as np
from keras import layers

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
t = np.linspace(0, 4 * np.pi, 32, dtype="float32")
y = rng.integers(0, 2, 600)
x = (np.sin(t[None, :] * (1 + y[:, None])) + 0.3 * rng.standard_normal((600, 32))).astype("float32")[..., None]

inputs = keras.Input(shape=(32, 1))
h = layers.Conv1D(8, 3, activation="relu")(inputs)
h = layers.GlobalAveragePooling1D()(h)
outputs = layers.Dense(2, activation="softmax")(h)
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
history = model.fit(x[:500], y[:500], batch_size=32, epochs=3, validation_data=(x[500:], y[500:]), verbose=0)
print("final accuracy:", history.history["val_sparse_categorical_accuracy"][-1])
