import keras
import tensorflow as tf


class Custom(keras.Model):
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return {"loss": loss}


model = Custom()
model.compile(optimizer="adam", loss="mse")
model.fit(tf.zeros((4, 2)), tf.zeros((4, 1)), epochs=1)
