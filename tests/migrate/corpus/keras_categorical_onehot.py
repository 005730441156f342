"""Wine with one-hot targets and categorical cross-entropy (the facade takes class indices: manual)."""
import keras
import numpy as np
from sklearn.datasets import load_wine

keras.utils.set_random_seed(0)
x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
y_onehot = keras.utils.to_categorical(y, 3)
model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y_onehot, epochs=5, batch_size=16, verbose=0, validation_split=0.25)
_, acc = model.evaluate(x, y_onehot, verbose=0)
print("final accuracy:", acc)
