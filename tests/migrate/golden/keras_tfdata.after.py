import tensorflow as tf

from mypkg import arrays
from unified import UnifiedTrainer

(x, y), (xv, yv) = arrays()
train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1000).batch(128)
val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(256)
net = tf.keras.models.Sequential([tf.keras.layers.Dense(10)])
trainer = UnifiedTrainer({
    "name": "keras_tfdata",
    "data": {"batch_size": 128},
    "optimizer": {"name": "adam", "lr": 0.0003, "eps": 1e-07},
    "trainer": {"max_epochs": 2},
}, backend="keras")
trainer.fit(model=net, data=(train, val))
print(trainer.evaluate(data=val)["test/loss"])
