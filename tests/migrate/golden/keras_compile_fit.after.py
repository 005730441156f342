import keras
from keras import layers

from mypkg import load_arrays
from unified import UnifiedTrainer

x_train, y_train, x_test, y_test = load_arrays()
keras.utils.set_random_seed(42)
model = keras.Sequential([keras.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
# fit on arrays with a validation split
trainer = UnifiedTrainer({
    "name": "keras_compile_fit",
    "seed": 42,
    "metrics": ["accuracy"],
    "data": {"batch_size": 64, "val_fraction": 0.1, "shuffle": True},
    "optimizer": {"name": "rmsprop", "lr": 0.001, "alpha": 0.9, "eps": 1e-07},
    "trainer": {"max_epochs": 4},
}, backend="keras")
history = trainer.fit(model=model, data=(x_train, y_train))
# TODO(unified migrate): history.history['accuracy'] has no facade key (FitResult.history has train/loss_epoch, val/*)
print(history.history["val/loss"][-1], history.history["train/loss_epoch"][-1], history.history["accuracy"])
test_loss, test_acc = list(trainer.evaluate(data=(x_test, y_test)).values())
probs = trainer.predict(x_test)
