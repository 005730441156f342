"""Callbacks: the :class:`Callback` base with a no-op method per hook, the :class:`TrainState` every
hook sees, and the built-ins. Adapters call these hooks from the native mechanism (a Lightning
``Callback``, Ignite event handlers, a Keras ``Callback``), so they fire at the same points everywhere.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np


if TYPE_CHECKING:
    from unified.events import TrainState


def __getattr__(name: str) -> Any:
    # TrainState lives beside the events that drive it (unified.events); kept importable from here.
    if name in ("TrainState", "Controller"):
        from unified import events

        return getattr(events, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")




class Callback:
    """Base class for callbacks; override the hooks you need (all are no-ops here).

    Hooks run at the same points on every backend. A hook that is not overridden costs nothing: the
    facade only calls the hooks a callback defines.
    """

    def on_fit_start(self, state: TrainState) -> None:
        """Called once, before the first training batch."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Called at the start of every training epoch (``state.epoch`` already advanced)."""

    def on_train_batch_end(self, state: TrainState) -> None:
        """Called after every training batch (``state.global_step``, ``state.last_loss``)."""

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Called after validation with the epoch's ``val/*`` values (also in ``state.metrics``)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called at the end of every epoch, after validation and logging."""

    def on_checkpoint_saved(self, state: TrainState, path: Path) -> None:
        """Called after a checkpoint file was written."""

    def on_fit_end(self, state: TrainState) -> None:
        """Called once when training ends, whatever the status."""

    def on_exception(self, state: TrainState, error: BaseException) -> None:
        """Called when training raises (including KeyboardInterrupt) before the error propagates."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints (counters, best scores)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


HOOKS = tuple(n for n in vars(Callback) if n.startswith("on_"))


def _better(mode: str, value: float, best: Optional[float], min_delta: float = 0.0) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a logged key, e.g. ``val/loss`` or ``val/accuracy``.
        mode: ``min`` or ``max``.
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        restore_best_weights: when training ends (stopped or completed, as Keras 3 does), load the
            weights of the best epoch. Checkpoints keep the training weights, so a resumed run continues
            from where training was, not from the restored weights.
    """

    def __init__(self, monitor: str = "val/loss", mode: str = "min", patience: int = 3, min_delta: float = 0.0,
                 restore_best_weights: bool = False) -> None:
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best_weights = min_delta, restore_best_weights
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.wait = 0
        self.stopped_epoch: Optional[int] = None
        self._best_weights: Optional[dict[str, np.ndarray]] = None

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.metrics.get(self.monitor)
        if value is None:
            return
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = float(value), state.epoch, 0
            if self.restore_best_weights:
                self._best_weights = state.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch
            state.request_stop(
                f"early stopping: {self.monitor} did not improve for {self.wait} epoch(s) "
                f"(best {self.best:.6g} at epoch {self.best_epoch})"
            )

    def on_fit_end(self, state: TrainState) -> None:
        if self.restore_best_weights and self._best_weights is not None and \
                state.status in ("completed", "stopped_early"):
            state.set_weights(self._best_weights)

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                               "stopped_epoch": self.stopped_epoch}
        if self.restore_best_weights and self._best_weights is not None:
            out["best_weights"] = self._best_weights
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch = state.get("stopped_epoch")
        self._best_weights = state.get("best_weights") if self.restore_best_weights else None


def _slug(key: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", key)


class ModelCheckpoint(Callback):
    """Keep the ``save_top_k`` best checkpoints by ``monitor`` plus ``last``.

    Files in ``dirpath`` (default ``<run_dir>/checkpoints``): ``last.ckpt`` / ``last.npz``,
    ``best.ckpt`` / ``best.npz`` and, for ``save_top_k > 1`` or ``-1`` (all),
    ``epoch=<E>-<monitor>=<value>.ckpt``. ``.ckpt`` is the backend's native checkpoint; ``.npz`` holds
    portable weights that any backend loads.
    """

    def __init__(self, monitor: str = "val/loss", mode: str = "min", save_top_k: int = 1, save_last: bool = True,
                 every_n_epochs: int = 1, dirpath: Optional[str] = None) -> None:
        self.monitor, self.mode, self.save_top_k = monitor, mode, save_top_k
        self.save_last, self.every_n_epochs, self.dirpath = save_last, every_n_epochs, dirpath
        self.best_value: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.best_path: Optional[str] = None
        self.kept: list[tuple[float, int, str]] = []  # (value, epoch, path) of the top-k files
        self._loaded_dir: Optional[str] = None

    def _dir(self, state: TrainState) -> Path:
        d = Path(self.dirpath) if self.dirpath else state.run_dir / "checkpoints"
        if self._loaded_dir is not None and os.path.abspath(self._loaded_dir) != os.path.abspath(d):
            # Resumed into another directory (like Lightning when dirpath changed): the top-k list and
            # best score refer to the old directory's files, so they start afresh here.
            self.best_value = self.best_epoch = self.best_path = None
            self.kept = []
        self._loaded_dir = None
        return d

    @property
    def _last_dir(self) -> Optional[str]:
        for path in [self.best_path, *(k[2] for k in self.kept)]:
            if path:
                return str(Path(path).parent)
        return self.dirpath

    def _save(self, state: TrainState, stem: str) -> Path:
        d = Path(self.dirpath) if self.dirpath else state.run_dir / "checkpoints"
        path = d / f"{stem}.ckpt"
        state.save_checkpoint(path)
        state.save_weights(d / f"{stem}.npz")
        return path

    def on_epoch_end(self, state: TrainState) -> None:
        if state.status == "failed":
            return  # never overwrite the last good checkpoint with a failed state (NaN weights)
        if state.epoch % self.every_n_epochs != 0 and not state.should_stop:
            return
        d = self._dir(state)
        saved: list[Path] = []
        value = state.metrics.get(self.monitor)
        if self.save_top_k != 0 and value is not None and _better(self.mode, value, self.best_value):
            self.best_value, self.best_epoch = float(value), state.epoch
            saved.append(self._save(state, "best"))
            self.best_path = str(saved[-1])
        if self.save_top_k not in (0, 1) and value is not None and not math.isnan(value):
            stem = f"epoch={state.epoch:03d}-{_slug(self.monitor)}={value:.4f}"
            worst_first = sorted(self.kept, key=lambda t: t[0], reverse=self.mode == "min")
            if self.save_top_k == -1 or len(self.kept) < self.save_top_k or _better(self.mode, value, worst_first[0][0]):
                path = d / f"{stem}.ckpt"
                state.save_checkpoint(path)
                saved.append(path)
                self.kept.append((float(value), state.epoch, str(path)))
                if self.save_top_k != -1 and len(self.kept) > self.save_top_k:
                    drop = sorted(self.kept, key=lambda t: t[0], reverse=self.mode == "min")[0]
                    self.kept.remove(drop)
                    Path(drop[2]).unlink(missing_ok=True)
        if self.save_last:
            saved.append(self._save(state, "last"))
        for path in saved:
            _notify_saved(state, path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_path": self.best_path,
                "kept": [list(k) for k in self.kept], "dir": self._last_dir}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_path = state["best_path"]
        self.kept = [tuple(k) for k in state["kept"]]  # type: ignore[misc]
        self._loaded_dir = state.get("dir")


def _notify_saved(state: TrainState, path: Path) -> None:
    dispatcher = getattr(state, "_dispatcher", None)
    if dispatcher is not None:
        dispatcher.checkpoint_saved(path)


class LearningRateMonitor(Callback):
    """Record the learning rate of every epoch in ``history`` (``lr`` is logged in any case)."""

    def __init__(self) -> None:
        self.history: list[tuple[int, float]] = []

    def on_epoch_end(self, state: TrainState) -> None:
        if "lr" in state.metrics:
            self.history.append((state.epoch, state.metrics["lr"]))

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(e), float(v)) for e, v in state.get("history", [])]


class TerminateOnNan(Callback):
    """Stop with status ``failed`` as soon as the training loss is NaN or infinite (a sync per step)."""

    def on_train_batch_end(self, state: TrainState) -> None:
        loss = state.last_loss
        if not math.isfinite(loss):
            state.request_stop(f"loss is {loss} at step {state.global_step}", status="failed")


class Timer(Callback):
    """Stop once ``max_time`` seconds of training have passed (a resumed run counts the time before it)."""

    def __init__(self, max_time: float) -> None:
        self.max_time = max_time
        self._start = 0.0
        self._before = 0.0

    def on_fit_start(self, state: TrainState) -> None:
        self._start = time.perf_counter() - self._before

    def elapsed(self) -> float:
        """Seconds of training so far."""
        return time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed() if self._start else self._before}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._before = float(state.get("elapsed", 0.0))

    def on_train_batch_end(self, state: TrainState) -> None:
        if time.perf_counter() - self._start >= self.max_time:
            state.request_stop(f"timer: max_time {self.max_time}s reached", status="stopped_early")


# spec kind -> the class its settings construct (the spec's CALLBACK_KINDS are these plus "python")
BUILTIN_CALLBACKS: dict[str, Any] = {
    "early_stopping": EarlyStopping,
    "model_checkpoint": ModelCheckpoint,
    "lr_monitor": LearningRateMonitor,
    "terminate_on_nan": TerminateOnNan,
    "timer": Timer,
}


def build_callbacks(spec: Any, base_dir: Optional[str] = None) -> list[Callback]:
    """The callbacks the spec's ``callbacks:`` list names, in order."""
    from unified.errors import SpecError
    from unified.models import import_target

    out: list[Callback] = []
    for i, entry in enumerate(spec.callbacks):
        kind, cfg = entry.kind, entry.config
        if kind in BUILTIN_CALLBACKS:
            out.append(BUILTIN_CALLBACKS[kind](**cfg.model_dump()))
        elif kind == "python":
            cls = import_target(cfg.target, f"callbacks[{i}].python.target", base_dir)
            try:
                cb = cls(**cfg.kwargs)
            except TypeError as e:
                raise SpecError(f"cannot construct {cfg.target}: {e}", path=f"callbacks[{i}].python.kwargs") from None
            if not isinstance(cb, Callback):
                raise SpecError(f"{cfg.target} is not a unified.callbacks.Callback subclass",
                                path=f"callbacks[{i}].python.target")
            out.append(cb)
    return out
