"""User Keras models whose last layer outputs probabilities (``softmax`` / ``sigmoid``) instead of logits.

Keras code usually ends a classifier with ``Dense(n, activation="softmax")`` and compiles a loss with
``from_logits=False``. The facade trains such a model with the probability form of its loss, and scores
it on logits recovered from the probabilities (``log p`` for softmax, ``log(p / (1 - p))`` for sigmoid):
the cross-entropy of those logits equals the model's own cross-entropy, so ``val/loss`` keeps the meaning
it has on every backend.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

_EPS = 1e-7  # Keras's own clipping of probabilities inside its cross-entropy


def output_activation(keras: Any, net: Any) -> Optional[str]:
    """``"softmax"`` or ``"sigmoid"`` when ``net``'s last layer ends in that activation, else None."""
    layers = getattr(net, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else None)
    return name if name in ("softmax", "sigmoid") else None


def to_logits(outputs: np.ndarray, activation: Optional[str]) -> np.ndarray:
    """Logits whose softmax / sigmoid gives ``outputs`` (unchanged when ``activation`` is None)."""
    if activation is None:
        return outputs
    p = np.clip(outputs.astype(np.float64), _EPS, 1.0 - _EPS)
    out = np.log(p) if activation == "softmax" else np.log(p) - np.log1p(-p)
    return out.astype(np.float32)
