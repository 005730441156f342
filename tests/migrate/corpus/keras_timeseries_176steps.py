"""Keras's "Timeseries classification from scratch" example (FordA: Conv1D on (N, 176, 1)), on synthetic
engine-noise-like series generated here (no download)."""
import keras
import numpy as np


def readucr(n, seed):
    """FordA's shape: n series of 500 steps in the original, 176 here; labels -1 / 1."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1, 1], n)
    t = np.arange(176)
    freq = np.where(y > 0, 0.05, 0.2)[:, None]
    x = np.sin(t[None, :] * freq + rng.uniform(0, 6.3, (n, 1))) + 0.5 * rng.standard_normal((n, 176))
    return x.astype("float32"), y


x_train, y_train = readucr(2400, 0)
x_test, y_test = readucr(600, 1)

x_train = x_train.reshape((x_train.shape[0], x_train.shape[1], 1))
x_test = x_test.reshape((x_test.shape[0], x_test.shape[1], 1))

num_classes = len(np.unique(y_train))

idx = np.random.default_rng(2).permutation(len(x_train))
x_train = x_train[idx]
y_train = y_train[idx]

y_train[y_train == -1] = 0
y_test[y_test == -1] = 0


def make_model(input_shape):
    input_layer = keras.layers.Input(input_shape)

    conv1 = keras.layers.Conv1D(filters=32, kernel_size=3, padding="same")(input_layer)
    conv1 = keras.layers.BatchNormalization()(conv1)
    conv1 = keras.layers.ReLU()(conv1)

    conv2 = keras.layers.Conv1D(filters=32, kernel_size=3, padding="same")(conv1)
    conv2 = keras.layers.BatchNormalization()(conv2)
    conv2 = keras.layers.ReLU()(conv2)

    conv3 = keras.layers.Conv1D(filters=32, kernel_size=3, padding="same")(conv2)
    conv3 = keras.layers.BatchNormalization()(conv3)
    conv3 = keras.layers.ReLU()(conv3)

    gap = keras.layers.GlobalAveragePooling1D()(conv3)

    output_layer = keras.layers.Dense(num_classes, activation="softmax")(gap)

    return keras.models.Model(inputs=input_layer, outputs=output_layer)


keras.utils.set_random_seed(3)
model = make_model(input_shape=x_train.shape[1:])

epochs = 8
batch_size = 32

callbacks = [
    keras.callbacks.ModelCheckpoint("best_model.keras", save_best_only=True, monitor="val_loss"),
    keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=20, min_lr=0.0001),
    keras.callbacks.EarlyStopping(monitor="val_loss", patience=50, verbose=1),
]
model.compile(
    optimizer="adam",
    loss="sparse_categorical_crossentropy",
    metrics=["sparse_categorical_accuracy"],
)
history = model.fit(
    x_train,
    y_train,
    batch_size=batch_size,
    epochs=epochs,
    callbacks=callbacks,
    validation_split=0.2,
    verbose=0,
)

test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
print("Test loss", test_loss)
print("final accuracy:", test_acc)
