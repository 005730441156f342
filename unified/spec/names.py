"""The spec's name lists and patterns, each derived from its one home (metrics, losses, data sources)."""

from __future__ import annotations

import re

from unified.data.sources import SOURCES
from unified.losses import DEFAULT_LOSS, LOSSES, LOSSES_FOR_TASK
from unified.metrics import BUILTIN_METRICS as _BUILTIN_METRIC_CLASSES
from unified.metrics import HIGHER_IS_BETTER, metrics_for_task
from unified.registry import KERAS_TENSOR_BACKENDS

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
DATA_SCHEMES = tuple(SOURCES)  # unified.data.sources.SOURCES: the one list of data.source schemes
# Name lists derived from their one home (unified.metrics, unified.losses, unified.registry).
TASKS = ("classification", "binary", "regression")
METRICS_FOR_TASK = {task: metrics_for_task(task) for task in TASKS}
CLASSIFICATION_METRICS = METRICS_FOR_TASK["classification"]
BINARY_METRICS = METRICS_FOR_TASK["binary"]
REGRESSION_METRICS = METRICS_FOR_TASK["regression"]
BUILTIN_METRICS = tuple(_BUILTIN_METRIC_CLASSES)
DEFAULT_METRICS = {
    "classification": ["accuracy", "f1_macro"],
    "binary": ["accuracy", "f1_macro", "auroc"],
    "regression": ["mse", "mae", "r2"],
}
PRECISION_ALIASES = {
    "32": "32", "32-true": "32", "fp32": "32",
    "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed",
    "16-mixed": "16-mixed", "16": "16-mixed", "fp16": "16-mixed",
}
TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

__all__ = [
    "SKLEARN_DATASETS", "DATA_SCHEMES", "TASKS", "METRICS_FOR_TASK", "CLASSIFICATION_METRICS", "BINARY_METRICS",
    "REGRESSION_METRICS", "BUILTIN_METRICS", "DEFAULT_METRICS", "PRECISION_ALIASES", "TARGET_RE", "DEFAULT_LOSS",
    "LOSSES", "LOSSES_FOR_TASK", "HIGHER_IS_BETTER", "KERAS_TENSOR_BACKENDS",
]
