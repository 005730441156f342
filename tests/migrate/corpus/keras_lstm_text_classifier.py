"""An LSTM text classifier on token ids (Embedding + bidirectional LSTM, shaped like Keras's "Bidirectional
LSTM on IMDB" example), on synthetic reviews generated here (no download): ragged lists of word ids padded
with keras.utils.pad_sequences, a review is positive when it holds more "good" words than "bad" ones."""
import keras
import numpy as np
from keras import layers

max_features = 500  # only consider the top 500 words
maxlen = 40  # only consider the first 40 words of each review


GOOD, BAD = np.arange(4, 14), np.arange(14, 24)  # word ids of "great", "superb" ... and "dull", "awful" ...


def load_reviews(n, seed):
    rng = np.random.default_rng(seed)
    reviews, labels = [], []
    for _ in range(n):
        words = list(rng.integers(24, max_features, rng.integers(10, 60)))
        label = int(rng.integers(0, 2))
        for _ in range(int(rng.integers(2, 5))):
            at = int(rng.integers(0, len(words)))
            words[at] = int(rng.choice(GOOD if label else BAD))
        reviews.append(words)
        labels.append(label)
    return reviews, np.array(labels)


keras.utils.set_random_seed(4)
(x_train, y_train), (x_val, y_val) = load_reviews(1200, 0), load_reviews(300, 1)
print(len(x_train), "Training sequences")
print(len(x_val), "Validation sequences")
x_train = keras.utils.pad_sequences(x_train, maxlen=maxlen, truncating="post")
x_val = keras.utils.pad_sequences(x_val, maxlen=maxlen, truncating="post")

# Input for variable-length sequences of integers
inputs = keras.Input(shape=(None,), dtype="int32")
# Embed each integer in a 32-dimensional vector
x = layers.Embedding(max_features, 32)(inputs)
# Add 2 bidirectional LSTMs
x = layers.Bidirectional(layers.LSTM(16, return_sequences=True))(x)
x = layers.Bidirectional(layers.LSTM(16))(x)
# Add a classifier
outputs = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(inputs, outputs)
model.summary()

model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
history = model.fit(x_train, y_train, batch_size=32, epochs=4, validation_data=(x_val, y_val), verbose=2)
print("final accuracy:", history.history["val_accuracy"][-1])
