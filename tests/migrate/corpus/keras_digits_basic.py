"""Digits with Keras: a softmax classifier built in a function that also compiles it."""
import numpy as np
import keras
from keras import layers
from sklearn.datasets import load_digits

keras.utils.set_random_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]


def build_model():
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),  # probabilities
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.005),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


model = build_model()
stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)
history = model.fit(x_train, y_train, epochs=5, batch_size=32, validation_split=0.2,
                    callbacks=[stop], verbose=0)
print("last val acc", history.history["val_accuracy"][-1])
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(f"final accuracy: {acc:.4f}")
print(model.predict(x_test[:3]).argmax(1))
