"""unified-trainer: one experiment spec, trained on PyTorch Lightning, PyTorch-Ignite or Keras 3.

Importing this package imports no framework; adapters import theirs when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "UnifiedTrainer", "FitResult", "load_spec", "Spec", "Callback", "TrainState", "Metric",
    "SpecError", "DataError", "BackendUnavailableError", "NotSupportedError", "TrainingError", "__version__",
]

from unified.errors import BackendUnavailableError, DataError, NotSupportedError, SpecError, TrainingError

_LAZY = {
    "UnifiedTrainer": "unified.trainer",
    "FitResult": "unified.trainer",
    "load_spec": "unified.spec",
    "Spec": "unified.spec",
    "Callback": "unified.callbacks",
    "TrainState": "unified.events",
    "Metric": "unified.metrics",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import unified` stays fast (pydantic and numpy load on first use).
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unified' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from unified.callbacks import Callback
    from unified.events import TrainState
    from unified.metrics import Metric
    from unified.spec import Spec, load_spec
    from unified.trainer import FitResult, UnifiedTrainer
