"""The small interface every backend adapter implements, and the loop contract it follows.

Imports no framework. An adapter translates its trainer's hooks into the calls below; every rule of
the loop (what a step is, when windows close, when schedulers step, when a run stops) is written once
here or in :class:`unified.events.RunEvents`, and adapters call it instead of restating it.

The loop contract
-----------------

**Events, in order.** ``ctx.events`` (:class:`~unified.events.RunEvents`) receives::

    fit_start()                                 once, when the native trainer starts training
    epoch_start(e)                              e = 1, 2, ... (a resumed epoch: its number again)
        add_micro_loss(loss)                    per micro-batch (adapter method; detached tensor, no sync)
        train_batch_end(take_step_loss(),       once per OPTIMIZER step, after it, with the window's mean
                        global_step, batch_idx)   loss; returns True when the epoch must end now
        ... scheduler: after_optimizer_step()
    scheduler: before_validation(full_epoch)    epoch-interval schedulers, before validation
    validation on the whole val split           -> {"val/loss": ..., "val/<metric>": ...} or None
    epoch_end(val_metrics)                      returns True when training must end
    scheduler: after_epoch_end(metrics)         reduce_on_plateau, on the value epoch_end logged
    fit_end()                                   once, when training ends normally (also after a stop)
    exception(error)                            instead of fit_end when training raised

``global_step`` counts optimizer steps from 1; ``batch_idx`` is the 0-based index in the epoch of the
batch that closed the window.

**Accumulation windows** (:class:`LoopPlan`). With ``accumulate_grad_batches = n`` a window is ``n``
consecutive micro-batches of one epoch; it closes on every ``n``-th batch of the epoch and on the
epoch's last batch (a partial window, as Lightning). Each micro-batch loss is divided by ``n`` before
backward (also in a partial window); the optimizer steps, clipping first, when the window closes;
``train/loss`` of that step is the mean of the window's micro-batch losses
(:meth:`BackendAdapter.add_micro_loss` / :meth:`BackendAdapter.take_step_loss`).

**Schedulers** (:class:`SchedulerStepper`). ``interval: step``: after each optimizer step (not per
micro-batch). ``interval: epoch``: after the epoch's last optimizer step, before validation, and only
when the epoch ran in full (an epoch cut short by ``max_steps`` or a stop does not step it).
``reduce_on_plateau``: after ``epoch_end``, on the value of its monitor that the epoch logged (NaN when
missing). ``lr`` logs the rate the last optimizer step used.

**Run length** (:meth:`LoopPlan.epochs`). ``max_steps`` wins over ``max_epochs``: the trainer is asked
for ``ceil(max_steps / optimizer steps per epoch)`` epochs (unbounded when a native loader has no
length) and ends after the step that reaches ``max_steps``.

**Stops.** ``train_batch_end`` returns True when a callback requested a stop or ``max_steps`` is
reached: the adapter ends the epoch at once, and the partial epoch is still validated and closed with
``epoch_end``. ``epoch_end`` returns True when training must end (a stop request, ``max_steps``, or
another rank stopped): the adapter ends training after the plateau step, and ``fit_end`` follows.

**Signals.** The facade installs a SIGINT/SIGTERM guard around ``adapter.fit()``; ``fit_start``
re-installs it (a trainer may have put its own handler in front). The first signal sets a flag; the
next ``train_batch_end`` (or ``epoch_end`` for an epoch's last batch) saves
``checkpoints/interrupted.ckpt`` through :meth:`BackendAdapter.save_checkpoint` and raises
:class:`~unified.errors.Interrupted`; the adapter lets it propagate after calling ``exception``.
"""

from __future__ import annotations

import importlib.metadata
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from unified.context import RunContext
from unified.devices import GpuProbe, Placement, no_gpu_probe, select_for
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


def window_closes(pos: int, accumulate: int, batches_per_epoch: Optional[int]) -> bool:
    """Whether the micro-batch at 1-based position ``pos`` of its epoch closes an accumulation window."""
    return pos % accumulate == 0 or (batches_per_epoch is not None and pos == batches_per_epoch)


@dataclass(frozen=True)
class LoopPlan:
    """The loop's arithmetic for one run: accumulation windows, optimizer steps and run length.

    Attributes:
        accumulate: micro-batches per optimizer step (``trainer.accumulate_grad_batches``).
        batches_per_epoch: micro-batches per epoch; ``None`` for a native loader without ``len``.
        max_epochs: ``trainer.max_epochs`` (``None`` with ``max_steps``: the steps alone decide).
        max_steps: ``trainer.max_steps`` (optimizer steps; wins over ``max_epochs``).
    """

    accumulate: int
    batches_per_epoch: Optional[int]
    max_epochs: Optional[int]
    max_steps: Optional[int]

    @classmethod
    def of(cls, spec: Any, batches_per_epoch: Optional[int]) -> "LoopPlan":
        tr = spec.trainer
        return cls(int(tr.accumulate_grad_batches), batches_per_epoch,
                   None if tr.max_epochs is None else int(tr.max_epochs), tr.max_steps)

    @property
    def steps_per_epoch(self) -> Optional[int]:
        """Optimizer steps per epoch (the last window may be partial); ``None`` when the length is unknown."""
        if self.batches_per_epoch is None:
            return None
        return -(-self.batches_per_epoch // self.accumulate)

    @property
    def epochs(self) -> Optional[int]:
        """Epochs to ask the native trainer for (``None``: unbounded, ``max_steps`` ends the run)."""
        if self.max_steps is None:
            return self.max_epochs
        spe = self.steps_per_epoch
        return math.ceil(self.max_steps / spe) if spe else None

    @property
    def total_steps(self) -> Optional[int]:
        """Optimizer steps of the whole run, when known."""
        if self.max_steps is not None:
            return self.max_steps
        spe = self.steps_per_epoch
        return spe * self.max_epochs if spe and self.max_epochs is not None else None

    def closes(self, batch_idx: int) -> bool:
        """Whether the 0-based micro-batch ``batch_idx`` of an epoch closes its window (the optimizer steps)."""
        return self.accumulate == 1 or window_closes(batch_idx + 1, self.accumulate, self.batches_per_epoch)

    def opens(self, batch_idx: int) -> bool:
        """Whether the 0-based micro-batch ``batch_idx`` of an epoch opens a window (gradients are zeroed)."""
        return batch_idx % self.accumulate == 0

    def global_step(self, batches_done: int) -> int:
        """Optimizer steps after ``batches_done`` micro-batches counted from the start (full epochs)."""
        n, length = self.accumulate, self.batches_per_epoch
        if n == 1 or not length:
            return -(-batches_done // n)
        epochs, pos = divmod(batches_done, length)
        return epochs * -(-length // n) + -(-pos // n)

    def reached(self, global_step: int) -> bool:
        """Whether ``max_steps`` is reached at ``global_step``."""
        return self.max_steps is not None and global_step >= self.max_steps


class SchedulerStepper:
    """When the lr scheduler steps (the contract above), for an adapter-supplied ``step`` function.

    Args:
        plan: the run's :class:`unified.schedules.SchedulePlan` (``None``: no scheduler, every call a no-op).
        step: ``step(metric)`` advances the adapter's scheduler once; ``metric`` is ``None`` except for
            ``reduce_on_plateau``.
    """

    def __init__(self, plan: Any, step: Callable[[Optional[float]], Any]) -> None:
        self.plan, self._step = plan, step
        kind = None if plan is None else ("plateau" if plan.name == "reduce_on_plateau" else plan.interval)
        self.per_step, self.per_epoch, self.on_plateau = kind == "step", kind == "epoch", kind == "plateau"

    def after_optimizer_step(self) -> None:
        if self.per_step:
            self._step(None)

    def before_validation(self, full_epoch: bool) -> None:
        if self.per_epoch and full_epoch:
            self._step(None)

    def after_epoch_end(self, metrics: dict[str, float]) -> None:
        if self.on_plateau:
            self._step(self.plateau_value(metrics))

    def plateau_value(self, metrics: dict[str, float]) -> float:
        """The value reduce_on_plateau steps on: its monitor as the epoch logged it (NaN when missing)."""
        return float(metrics.get(self.plan.monitor, math.nan))


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
    # trainer.devices > 1 as replicas inside this one process (Keras: tf.distribute / keras.distribution): the
    # facade starts no other processes, and summary.json's world_size is the number of devices.
    devices_in_process: ClassVar[bool] = False

    @classmethod
    def export_formats_for(cls, spec: Any) -> frozenset[str]:
        """The export formats this backend gives for ``spec`` (``onnx``, ``torchscript``, ...)."""
        return cls.export_formats

    @classmethod
    def label(cls, spec: Any) -> str:
        """How messages name this backend for ``spec`` (e.g. ``keras on torch``)."""
        return cls.name

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
    def gpu_probe(cls, spec: Any) -> GpuProbe:
        """How many GPUs this backend's framework sees for ``spec`` (override; the default: none)."""
        return no_gpu_probe(cls.label(spec), f"backend {cls.name!r} trains on the CPU only")

    @classmethod
    def gpu_capable(cls) -> bool:
        """Whether this backend can train on a GPU at all (it has a probe of its own)."""
        return cls.gpu_probe.__func__ is not BackendAdapter.gpu_probe.__func__  # type: ignore[attr-defined]

    @classmethod
    def select_placement(cls, spec: Any) -> Placement:
        """The accelerator and device count ``spec`` trains on here (``unified.devices.select``; SpecError
        for a GPU that is not there, more devices than GPUs, or ``16-mixed`` on the CPU)."""
        return select_for(spec, lambda: cls.gpu_probe(spec))

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        """Raise, before anything runs: NotSupportedError naming what the backend cannot do at all, then
        SpecError when this machine cannot give what the spec asks (``select_placement``: a GPU that is not
        there, more devices than GPUs, ``16-mixed`` on the CPU)."""
        missing = cls.unsupported(spec)
        for feat, (asks, desc) in FEATURE_CHECKS.items():
            if asks(spec) and feat not in cls.features and feat in cls.feature_notes:
                raise NotSupportedError(f"backend {cls.name!r} does not support {desc}: {cls.feature_notes[feat]}")
        if missing:
            raise NotSupportedError(
                f"backend {cls.name!r} does not support {'; '.join(missing)} yet "
                f"(see `unified backends` for what each backend supports)"
            )
        cls.select_placement(spec)

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
