"""Iris with tf.keras and tf.data pipelines (batched datasets for training and validation)."""
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris

tf.keras.utils.set_random_seed(3)
x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype("float32")
perm = np.random.default_rng(3).permutation(150)
train_idx, val_idx = perm[:120], perm[120:]
train_ds = tf.data.Dataset.from_tensor_slices((x[train_idx], y[train_idx])).shuffle(120, seed=3).batch(16)
val_ds = tf.data.Dataset.from_tensor_slices((x[val_idx], y[val_idx])).batch(32)

model = tf.keras.Sequential([
    tf.keras.Input(shape=(4,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(3),  # logits
])
model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
history = model.fit(train_ds, validation_data=val_ds, epochs=8, verbose=0)
print("final accuracy:", history.history["val_accuracy"][-1])
