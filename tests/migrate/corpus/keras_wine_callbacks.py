"""Wine with Keras callbacks: checkpoint of the best model, LR reduction, CSV log, early stopping."""
import keras
import numpy as np
from keras import callbacks, layers
from sklearn.datasets import load_wine

keras.utils.set_random_seed(11)
x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
perm = np.random.default_rng(11).permutation(len(x))
x_train, y_train = x[perm[:130]], y[perm[:130]]
x_val, y_val = x[perm[130:]], y[perm[130:]]

inputs = keras.Input(shape=(13,))
hidden = layers.Dense(32, activation="relu")(inputs)
outputs = layers.Dense(3, activation="softmax")(hidden)
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

cbs = [
    callbacks.ModelCheckpoint("wine_best.keras", monitor="val_accuracy", save_best_only=True),
    callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
    callbacks.CSVLogger("wine_log.csv"),
    callbacks.EarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True),
]
model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=10, batch_size=16, callbacks=cbs, verbose=0)
scores = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
print("final accuracy:", scores["accuracy"])
