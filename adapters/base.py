"""The small interface every backend adapter implements. Imports no framework."""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from unified.context import RunContext
from unified.errors import NotSupportedError

# feature name -> (does the spec ask for it?, how to say it). A backend lists what it supports in
# ``features``; what the spec asks for but the backend lacks is refused before training starts.
FEATURE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "precision:bf16-mixed": (lambda s: s.trainer.precision == "bf16-mixed", "trainer.precision: 'bf16-mixed'"),
    "precision:16-mixed": (lambda s: s.trainer.precision == "16-mixed", "trainer.precision: '16-mixed'"),
    "accumulation": (lambda s: s.trainer.accumulate_grad_batches > 1, "trainer.accumulate_grad_batches > 1"),
    "gradient_clipping": (lambda s: s.trainer.gradient_clip_norm is not None, "trainer.gradient_clip_norm"),
    "distributed": (lambda s: s.trainer.devices > 1 or s.trainer.num_nodes > 1 or s.trainer.strategy == "ddp",
                    "trainer.devices/num_nodes > 1 or strategy: ddp"),
    "scheduler": (lambda s: s.scheduler is not None, "scheduler"),
    "logger:tensorboard": (lambda s: "tensorboard" in s.logging.loggers, "logging.loggers: tensorboard"),
    "logger:mlflow": (lambda s: "mlflow" in s.logging.loggers, "logging.loggers: mlflow"),
    "export:onnx": (lambda s: "onnx" in s.export.formats, "export.formats: onnx"),
    "export:torchscript": (lambda s: "torchscript" in s.export.formats, "export.formats: torchscript"),
    "export:savedmodel": (lambda s: "savedmodel" in s.export.formats, "export.formats: savedmodel"),
    "export:keras": (lambda s: "keras" in s.export.formats, "export.formats: keras"),
    "export:tflite": (lambda s: "tflite" in s.export.formats, "export.formats: tflite"),
}

# What every adapter must provide (the conformance suite checks each).
CORE_FEATURES = frozenset({
    "precision:32", "csv", "callbacks", "early_stopping", "model_checkpoint", "max_steps",
    "custom_metric", "custom_model", "numpy_data", "progress_bar",
    "logger:tensorboard", "logger:mlflow",  # written by the facade (unified.loggers), the same on every backend
})


class BackendAdapter(ABC):
    """One training backend. Built per run from a :class:`RunContext`.

    The adapter builds the native model, loss, optimizer and data pipeline, runs the native trainer,
    and calls ``ctx.events`` from native hook points so the facade can log and run callbacks.
    """

    name: ClassVar[str]
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions go into summary.json
    features: ClassVar[frozenset[str]] = CORE_FEATURES
    # feature -> why the backend cannot do it (said instead of "not ... yet" when it never will here)
    feature_notes: ClassVar[dict[str, str]] = {}
    # export: the module with ``export(adapter, fmt, out_dir, preprocess, example)`` and ``requires(fmt, spec)``
    # (adapters/export_*.py), and the formats it gives (``export_formats_for`` when they depend on the spec).
    exporter: ClassVar[Optional[str]] = None
    export_formats: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def export_formats_for(cls, spec: Any) -> frozenset[str]:
        """The export formats this backend gives for ``spec`` (``onnx``, ``torchscript``, ...)."""
        return cls.export_formats

    @classmethod
    def versions(cls) -> dict[str, str]:
        out = {}
        for pkg in cls.packages:
            try:
                out[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                out[pkg] = "not installed"
        return out

    @classmethod
    def unsupported(cls, spec: Any) -> list[str]:
        """What ``spec`` asks for that this backend cannot do (empty when it can run it)."""
        have = cls.features | {f"export:{f}" for f in cls.export_formats_for(spec)}
        return [desc for feat, (asks, desc) in FEATURE_CHECKS.items() if asks(spec) and feat not in have]

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        """Raise NotSupportedError, before anything runs, naming what the backend cannot do."""
        missing = cls.unsupported(spec)
        for feat, (asks, desc) in FEATURE_CHECKS.items():
            if asks(spec) and feat not in cls.features and feat in cls.feature_notes:
                raise NotSupportedError(f"backend {cls.name!r} does not support {desc}: {cls.feature_notes[feat]}")
        if missing:
            raise NotSupportedError(
                f"backend {cls.name!r} does not support {'; '.join(missing)} yet "
                f"(see `unified backends` for what each backend supports)"
            )

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._win_loss: Any = None  # the open accumulation window's summed micro-batch losses
        self._win_n = 0

    def add_micro_loss(self, loss: Any) -> None:
        """Add one micro-batch's detached loss (a framework tensor) to the open window (no host sync)."""
        self._win_loss = loss if self._win_n == 0 else self._win_loss + loss
        self._win_n += 1

    def take_step_loss(self) -> Any:
        """The closed window's ``train/loss``: the mean of its micro-batch losses."""
        loss, n = self._win_loss, self._win_n
        self._win_loss, self._win_n = None, 0
        return loss if n == 1 else loss / n

    @abstractmethod
    def fit(self) -> None:
        """Train with the native trainer, calling ``self.ctx.events`` at the native hook points."""

    @abstractmethod
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Evaluate on ``split`` (``val`` / ``test``) and return ``{"<split>/loss": ..., "<split>/<metric>": ...}``."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs for already-transformed features ``x`` (float32, 2-D)."""

    @abstractmethod
    def save_checkpoint(self, path: str) -> None:
        """Write the native checkpoint (model, optimizer, counters) to ``path``."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's weights as numpy arrays, PyTorch names and layout."""

    @abstractmethod
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights produced by :meth:`get_weights`."""

    def native_model(self) -> Optional[Any]:
        """The trained native model object (``torch.nn.Module``, ``keras.Model``)."""
        return None

    # -- exact resume ----------------------------------------------------------------------------------
    @classmethod
    def read_checkpoint(cls, path: Any, spec: Any) -> tuple[dict[str, Any], Any]:
        """Read a native checkpoint written by :meth:`save_checkpoint`, before the run starts.

        Returns:
            ``(run state, payload)``: the facade's run state (:meth:`unified.events.RunEvents.resume_state`)
            and whatever :meth:`restore` needs. Raises SpecError when ``path`` is not such a checkpoint.
        """
        raise NotSupportedError(f"backend {cls.name!r} cannot resume from a checkpoint yet")

    def restore(self, payload: Any, run_state: dict[str, Any]) -> None:
        """Load weights, optimizer/scheduler state and counters from :meth:`read_checkpoint`'s payload,
        and start the canonical batch order where the checkpoint left it."""
        raise NotSupportedError(f"backend {self.name!r} cannot resume from a checkpoint yet")
