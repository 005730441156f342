"""Breast cancer with Keras: a sigmoid output and binary cross-entropy."""
import keras
import numpy as np
from sklearn.datasets import load_breast_cancer

keras.utils.set_random_seed(0)
features, labels = load_breast_cancer(return_X_y=True)
features = ((features - features.mean(0)) / features.std(0)).astype("float32")

clf = keras.Sequential([
    keras.layers.Input((30,)),
    keras.layers.Dense(16, activation="relu"),
    keras.layers.Dense(1, activation="sigmoid"),
])
clf.compile(optimizer=keras.optimizers.RMSprop(0.003), loss="binary_crossentropy", metrics=["accuracy"])
clf.fit(features[:450], labels[:450], epochs=5, batch_size=32, shuffle=True, verbose=0)
loss, accuracy = clf.evaluate(features[450:], labels[450:], verbose=0)
probabilities = clf.predict(features[450:], verbose=0)
print("mean probability:", float(probabilities.mean()))
print("final accuracy:", accuracy)
