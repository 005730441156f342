"""Diabetes regression with Keras: mse loss, mae metric, a validation split, history reads."""
import keras
import numpy as np
from sklearn.datasets import load_diabetes

keras.utils.set_random_seed(0)
x, y = load_diabetes(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
y = ((y - y.mean()) / y.std()).astype("float32")

model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"])
history = model.fit(x, y, epochs=6, batch_size=32, validation_split=0.2, verbose=0)
print("val mae per epoch:", [round(v, 3) for v in history.history["val_mae"]])
print("final mse:", history.history["val_loss"][-1])
