"""The built-in losses: names, the tasks each fits, and each task's default (the one list; the spec and the
adapters' implementations derive from it). Imports nothing heavy."""

from __future__ import annotations

# loss -> the tasks it applies to. Each adapter implements every name (torch_common._Loss, keras._keras_loss).
LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("classification",),
    "bce_with_logits": ("binary",),
    "mse": ("regression",),
    "mae": ("regression",),
    "huber": ("regression",),
}
DEFAULT_LOSS = {"classification": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}
LOSSES_FOR_TASK = {task: tuple(n for n, tasks in LOSSES.items() if task in tasks) for task in DEFAULT_LOSS}
