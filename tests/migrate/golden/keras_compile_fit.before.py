import keras
from keras import layers

from mypkg import load_arrays

x_train, y_train, x_test, y_test = load_arrays()
keras.utils.set_random_seed(42)
model = keras.Sequential([keras.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
# fit on arrays with a validation split
history = model.fit(x_train, y_train, epochs=4, batch_size=64, validation_split=0.1, shuffle=True, verbose=2)
print(history.history["val_loss"][-1], history.history["loss"][-1], history.history["accuracy"])
test_loss, test_acc = model.evaluate(x_test, y_test)
probs = model.predict(x_test, batch_size=256)
