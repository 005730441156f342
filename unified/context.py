"""What the facade hands an adapter for one run (backend-neutral, no framework imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from unified.data import Dataset
from unified.events import RunEvents
from unified.metrics import EvalAccumulator, Metric
from unified.models import ModelPlan


@dataclass
class RunContext:
    """Everything an adapter needs: the resolved spec, data, model, metrics and the event sink.

    Exactly one of ``plan`` (a built-in model with portable initial weights) and ``user_model`` (the
    user's native model object) is set. ``dataset`` holds the canonical numpy data; ``user_loaders``
    holds the user's own native loaders (``{"train": ..., "val": ...}``) when they passed them instead.
    """

    spec: Any
    backend: str
    run_dir: Path
    events: RunEvents
    metrics: list[Metric]
    dataset: Optional[Dataset] = None
    plan: Optional[ModelPlan] = None
    user_model: Any = None
    user_loaders: dict[str, Any] = field(default_factory=dict)

    def accumulator(self, prefix: str) -> EvalAccumulator:
        """A fresh streaming evaluator for ``<prefix>/loss`` and ``<prefix>/<metric>``."""
        for m in self.metrics:
            m.reset()
        return EvalAccumulator(self.metrics, prefix)

    @property
    def has_val(self) -> bool:
        if self.user_loaders:
            return self.user_loaders.get("val") is not None
        return self.dataset is not None and self.dataset.val is not None
