"""Keras's "Simple MNIST convnet" example (Conv2D on (N, 28, 28, 1), channels-last), offline: scikit-learn's
8x8 digits scaled up to 28x28 stand in for MNIST (no download)."""
import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits

# Model / data parameters
num_classes = 10
input_shape = (28, 28, 1)
keras.utils.set_random_seed(1)

# The data, split between train and test sets
digits, labels = load_digits(return_X_y=True)
images = np.kron(digits.reshape(-1, 8, 8), np.ones((3, 3)))  # 24x24
images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28x28, like MNIST's border
x_train, y_train = images[:1500], labels[:1500]
x_test, y_test = images[1500:], labels[1500:]

# Scale images to the [0, 1] range
x_train = x_train.astype("float32") / 16
x_test = x_test.astype("float32") / 16
# Make sure images have shape (28, 28, 1)
x_train = np.expand_dims(x_train, -1)
x_test = np.expand_dims(x_test, -1)
print("x_train shape:", x_train.shape)

model = keras.Sequential(
    [
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ]
)
model.summary()

batch_size = 128
epochs = 6

model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)

score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("final accuracy:", score[1])
