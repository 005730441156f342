"""Iris with a keras.Model subclass overriding train_step (custom logic: reported, left on Keras)."""
import keras
import numpy as np
from sklearn.datasets import load_iris

keras.utils.set_random_seed(1)


class NoisyModel(keras.Model):
    """Adds input noise inside train_step."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.hidden(x))

    def train_step(self, data):
        x, y = data
        x = x + keras.random.normal(keras.ops.shape(x), stddev=0.05)
        return super().train_step((x, y))


x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
model = NoisyModel()
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
print("final accuracy:", history.history["accuracy"][-1])
