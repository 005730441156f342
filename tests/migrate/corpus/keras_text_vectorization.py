"""Keras's "Text classification from scratch" pattern: a TextVectorization layer inside the model, trained on
raw strings (synthetic reviews generated here, no download). The facade takes numeric arrays, so
`unified migrate` leaves this file on Keras and says why."""
import keras
import numpy as np
from keras import layers

rng = np.random.default_rng(5)
good, bad, filler = ["great", "superb", "moving", "fun"], ["dull", "awful", "boring", "flat"], \
    ["the", "film", "plot", "actor", "scene", "was", "and", "a", "story", "music"]


def review(label):
    words = list(rng.choice(filler, rng.integers(6, 16)))
    for _ in range(2):
        words.insert(int(rng.integers(0, len(words))), str(rng.choice(good if label else bad)))
    return " ".join(words)


keras.utils.set_random_seed(5)
labels = rng.integers(0, 2, 800)
texts = np.array([review(int(y)) for y in labels], dtype=object)

vectorize_layer = layers.TextVectorization(max_tokens=100, output_mode="int", output_sequence_length=20)
vectorize_layer.adapt(texts[:600])

model = keras.Sequential([
    keras.Input(shape=(1,), dtype="string"),
    vectorize_layer,
    layers.Embedding(100, 16),
    layers.GlobalAveragePooling1D(),
    layers.Dense(1, activation="sigmoid"),
])
model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
history = model.fit(texts[:600], labels[:600], validation_data=(texts[600:], labels[600:]), epochs=5, verbose=0)
print("final accuracy:", history.history["val_accuracy"][-1])
