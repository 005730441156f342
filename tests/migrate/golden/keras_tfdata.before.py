import tensorflow as tf

from mypkg import arrays

(x, y), (xv, yv) = arrays()
train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1000).batch(128)
val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(256)
net = tf.keras.models.Sequential([tf.keras.layers.Dense(10)])
net.compile(tf.keras.optimizers.Adam(3e-4), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
net.fit(train, validation_data=val, epochs=2, steps_per_epoch=10)
print(net.evaluate(val))
