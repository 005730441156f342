"""Metric names of Lightning / Ignite / Keras code mapped to the facade's keys (``val_loss`` -> ``val/loss``)."""

from __future__ import annotations

import re
from typing import Optional

# The part after the split prefix -> the facade's metric name.
METRIC_NAMES = {
    "loss": "loss", "nll": "loss", "ce": "loss", "xent": "loss", "cross_entropy": "loss",
    "acc": "accuracy", "accuracy": "accuracy", "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy", "binary_accuracy": "accuracy",
    "f1": "f1_macro", "f1_score": "f1_macro", "f1_macro": "f1_macro",
    "precision": "precision_macro", "precision_macro": "precision_macro",
    "recall": "recall_macro", "recall_macro": "recall_macro",
    "auroc": "auroc", "auc": "auroc", "roc_auc": "auroc",
    "mse": "mse", "mean_squared_error": "mse", "mae": "mae", "mean_absolute_error": "mae", "r2": "r2",
}
SPLITS = {"val": "val", "valid": "val", "validation": "val", "train": "train", "training": "train",
          "test": "test", "testing": "test"}
_PREFIXED = re.compile(r"^(?P<split>[a-z]+)[_/](?P<name>\w+?)(?:_epoch|_step)?$")


def facade_key(name: str, bare_split: Optional[str] = None) -> Optional[str]:
    """The facade's key for a native metric name, or None when there is none.

    Args:
        name: e.g. ``val_loss``, ``val_acc``, ``valid/accuracy``, ``test_f1``, ``loss``.
        bare_split: the split a name without a prefix belongs to (Keras history: ``train``; Ignite
            evaluator metrics: ``val``; Keras ``evaluate``: ``test``). None: a bare name has no key.

    The facade logs ``train/loss`` per step and ``train/loss_epoch`` per epoch but no other training
    metric, so ``train_acc`` has no key.
    """
    if name.startswith(("val/", "test/", "train/")) or name == "lr":
        return name
    m = _PREFIXED.match(name)
    split, metric = (SPLITS.get(m["split"]), m["name"]) if m else (None, name)
    if split is None:
        if bare_split is None:
            return None
        split, metric = bare_split, name
    canon = METRIC_NAMES.get(metric)
    if canon is None:
        return None
    if split == "train":
        return ("train/loss_epoch" if bare_split == "train" and m is None else "train/loss") if canon == "loss" else None
    return f"{split}/{canon}"


def metric_of(key: str) -> Optional[str]:
    """The spec metric name behind a facade key (``val/accuracy`` -> ``accuracy``; loss -> None)."""
    metric = key.partition("/")[2]
    return None if metric in ("", "loss", "loss_epoch") else metric


def mode_for(key: str) -> str:
    """``min`` for losses and errors, ``max`` for scores (what ``mode="auto"`` means in Keras)."""
    metric = key.partition("/")[2]
    return "min" if metric in ("loss", "loss_epoch", "mse", "mae") else "max"
