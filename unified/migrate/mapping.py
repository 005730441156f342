"""Framework settings -> spec values shared by the rules: losses, optimizers, metric lists, spec layout."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from unified.migrate.keys import metric_of

# torch loss (functional or module, by qualified name) -> (task, spec loss)
TORCH_LOSSES = {
    "torch.nn.functional.cross_entropy": ("classification", "cross_entropy"),
    "torch.nn.CrossEntropyLoss": ("classification", "cross_entropy"),
    "torch.nn.functional.nll_loss": ("classification", "cross_entropy"),
    "torch.nn.NLLLoss": ("classification", "cross_entropy"),
    "torch.nn.functional.binary_cross_entropy_with_logits": ("binary", "bce_with_logits"),
    "torch.nn.BCEWithLogitsLoss": ("binary", "bce_with_logits"),
    "torch.nn.functional.mse_loss": ("regression", "mse"),
    "torch.nn.MSELoss": ("regression", "mse"),
    "torch.nn.functional.l1_loss": ("regression", "mae"),
    "torch.nn.L1Loss": ("regression", "mae"),
    "torch.nn.functional.huber_loss": ("regression", "huber"),
    "torch.nn.HuberLoss": ("regression", "huber"),
    "torch.nn.functional.smooth_l1_loss": ("regression", "huber"),
    "torch.nn.SmoothL1Loss": ("regression", "huber"),
}
# nll_loss expects log-probabilities; cross_entropy of log-probabilities is the same value.
NLL_NOTE = "NLL on log_softmax outputs equals cross_entropy on them"

# torch.optim class -> (spec name, {torch kwarg: spec key})
TORCH_OPTIMIZERS = {
    "SGD": ("sgd", {"lr": "lr", "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay"}),
    "Adam": ("adam", {"lr": "lr", "betas": "betas", "eps": "eps", "weight_decay": "weight_decay"}),
    "AdamW": ("adamw", {"lr": "lr", "betas": "betas", "eps": "eps", "weight_decay": "weight_decay"}),
    "RMSprop": ("rmsprop", {"lr": "lr", "alpha": "alpha", "eps": "eps", "momentum": "momentum",
                            "weight_decay": "weight_decay"}),
}
TASK_METRICS = {
    "classification": ("accuracy", "f1_macro", "precision_macro", "recall_macro"),
    "binary": ("accuracy", "f1_macro", "precision_macro", "recall_macro", "auroc"),
    "regression": ("mse", "mae", "r2"),
}
DEFAULT_METRICS = {"classification": ["accuracy", "f1_macro"], "binary": ["accuracy", "f1_macro", "auroc"],
                   "regression": ["mse", "mae", "r2"]}


def metrics_for(task: str, keys: Iterable[str], explicit: Optional[list[str]] = None) -> Optional[list[str]]:
    """The spec's ``metrics``: ``explicit`` (Keras compile order) or the defaults plus what the code reads.

    Returns None when the task's defaults already cover everything (the key is then left out).
    """
    allowed = TASK_METRICS[task]
    wanted = list(dict.fromkeys(m for m in (metric_of(k) for k in keys) if m is not None and m in allowed))
    if explicit is not None:
        out = [m for m in explicit if m in allowed]
        out += [m for m in wanted if m not in out]
        return out
    out = list(DEFAULT_METRICS[task])
    out += [m for m in wanted if m not in out]
    return None if out == DEFAULT_METRICS[task] else out


def unknown_metric_keys(task: str, keys: Iterable[str]) -> list[str]:
    allowed = TASK_METRICS[task]
    return [k for k in keys if (m := metric_of(k)) is not None and m not in allowed]


def spec_dict(*, name: str, seed: Any = None, task: Optional[str] = None, loss: Optional[str] = None,
              metrics: Optional[list[str]] = None, data: Optional[dict[str, Any]] = None,
              optimizer: Optional[dict[str, Any]] = None, trainer: Optional[dict[str, Any]] = None,
              callbacks: Optional[list[dict[str, Any]]] = None, logging: Optional[dict[str, Any]] = None
              ) -> dict[str, Any]:
    """The spec in the order of docs/spec.md, without empty sections and without task/loss defaults."""
    out: dict[str, Any] = {"name": name}
    if seed is not None:
        out["seed"] = seed
    if task and task != "classification":
        out["task"] = task
    default_loss = {"classification": "cross_entropy", "binary": "bce_with_logits", "regression": "mse"}
    if loss and loss != default_loss.get(task or "classification"):
        out["loss"] = loss
    if metrics:
        out["metrics"] = metrics
    for key, value in (("data", data), ("optimizer", optimizer), ("trainer", trainer), ("callbacks", callbacks),
                       ("logging", logging)):
        if value:
            out[key] = value
    return out


def safe_name(stem: str) -> str:
    import re

    name = re.sub(r"[^\w.\-]+", "-", stem).strip("-.")
    return name or "experiment"
