"""The backend-neutral half of the training loop's bookkeeping.

An adapter calls these methods from the native hook points (a Lightning ``Callback``, Ignite event
handlers, a Keras ``Callback``). They update the :class:`TrainState`, write ``metrics.csv``, draw the
progress line and call the user's callbacks, so all of it behaves the same on every backend.

Hot path: :meth:`RunEvents.train_batch_end` runs once per batch. It does no host sync except on
logging steps (``log_every_n_steps``), and calls only the callbacks that override the hook.

It also owns what a checkpoint needs beyond the native trainer's state (:meth:`RunEvents.resume_state`),
restores it (:meth:`RunEvents.load_resume_state`), and turns SIGINT/SIGTERM into a checkpoint plus
:class:`~unified.errors.Interrupted` at the next batch boundary (:meth:`RunEvents.request_interrupt`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from unified.callbacks import HOOKS, Callback, ModelCheckpoint
from unified.files import atomic_write
from unified.loggers import CsvLogger
from unified.progress import ProgressDisplay
from unified.resume import STATE_FORMAT


class Controller(Protocol):
    """What the running adapter offers to callbacks (implemented by every adapter)."""

    def save_checkpoint(self, path: str) -> None: ...
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...


@dataclass
class TrainState:
    """What callbacks see: counters, the latest value of every logged key, and the stop flag.

    Attributes:
        epoch: the current epoch, counting from 1 (0 before the first epoch starts).
        global_step: optimizer steps taken so far.
        batch_idx: index of the last training batch within the epoch.
        metrics: the latest value of every logged key (``train/loss``, ``val/accuracy``, ...).
        should_stop: set it (or call :meth:`request_stop`) to end training after the current epoch.
        status: ``running``, then ``completed``, ``stopped_early``, ``interrupted`` or ``failed``.
        run_dir: the run directory.
        resumed_from: the checkpoint this run continued from (``None`` for a fresh run).
    """

    backend: str
    run_dir: Path
    max_epochs: Optional[int]
    max_steps: Optional[int]
    steps_per_epoch: Optional[int]
    epoch: int = 0
    global_step: int = 0
    batch_idx: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    should_stop: bool = False
    stop_reason: Optional[str] = None
    status: str = "running"
    best: Optional[dict[str, Any]] = None
    resumed_from: Optional[str] = None
    _loss: Any = field(default=None, repr=False)
    _controller: Optional[Controller] = field(default=None, repr=False)
    _dispatcher: Any = field(default=None, repr=False)

    @property
    def last_loss(self) -> float:
        """The training loss of the last batch (a host sync: read it only when you need it)."""
        return float(self._loss) if self._loss is not None else math.nan

    def request_stop(self, reason: str, status: str = "stopped_early") -> None:
        """Stop at the end of the current epoch (or batch, where the backend allows)."""
        if not self.should_stop:
            self.should_stop = True
            self.stop_reason = reason
            self.status = status

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Save the backend's native checkpoint (model, optimizer, counters) atomically at ``path``."""
        assert self._controller is not None, "no running backend"
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, self._controller.save_checkpoint)

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Save portable weights (``.npz``, PyTorch names and layout) atomically at ``path``."""
        weights = self.get_weights()

        def _write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **weights)

        atomic_write(path, _write)

    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's weights as numpy arrays, keyed like a PyTorch ``state_dict``."""
        assert self._controller is not None, "no running backend"
        return self._controller.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights produced by :meth:`get_weights` into the running model."""
        assert self._controller is not None, "no running backend"
        self._controller.set_weights(weights)


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


def _checkpoints_last(callbacks: list[Callback]) -> list[Callback]:
    # Like Lightning, checkpoint callbacks run after the others, so the checkpoint they write at an
    # epoch end holds every other callback's state for that epoch (early-stopping counters, best scores).
    return [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + \
        [c for c in callbacks if isinstance(c, ModelCheckpoint)]


class RunEvents:
    """Receives the adapter's hook calls; owns the state, the CSV file, the progress display."""

    def __init__(self, state: TrainState, callbacks: list[Callback], csv: Optional[CsvLogger],
                 progress: Optional[ProgressDisplay], log_every_n_steps: int, loggers: Sequence[Any] = ()) -> None:
        self.state = state
        state._dispatcher = self
        self.callbacks = callbacks
        ordered = _checkpoints_last(callbacks)
        self._by_hook: dict[str, list[Callback]] = {h: [c for c in ordered if _overrides(c, h)] for h in HOOKS}
        self._batch_cbs = self._by_hook["on_train_batch_end"]
        self.csv = csv
        self.progress = progress
        self.log_every = log_every_n_steps
        self.loggers = tuple(loggers)  # TensorBoard / MLflow (unified.loggers.RunLoggers): the CSV's rows
        self._loss_sum: Any = None
        self._loss_count = 0
        self._last_logged_step = -1
        self._lr: Callable[[], float] = lambda: math.nan
        self.fit_started: Optional[float] = None
        self.train_time_s = 0.0
        # checkpoint / resume / interruption bookkeeping
        self._batches_in_epoch = 0
        self._epoch_closed = False
        self._time_before = 0.0  # training seconds of the run before it was resumed
        self._resume: Optional[dict[str, Any]] = None
        self._interrupt: Optional[int] = None
        self.interruption: Optional[BaseException] = None  # the Interrupted this run raised, if any
        self.save_last_at_end = False  # the facade sets it when no model_checkpoint saves last.ckpt
        # several processes (unified.distributed): the adapter installs cross-rank reductions
        self.reduce_mean: Optional[Callable[[Any], Any]] = None
        self.reduce_any: Optional[Callable[[bool], bool]] = None
        self.signal_guard: Any = None  # the facade's SignalGuard (adapters re-install it when a trainer replaced it)

    def bind(self, controller: Any, lr: Callable[[], float]) -> None:
        """Attach the running adapter (checkpoints, weights) and a cheap learning-rate getter."""
        self.state._controller = controller
        self._lr = lr

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self._by_hook[hook]:
            getattr(cb, hook)(self.state, *args)

    # -- hooks the adapters call ------------------------------------------------------------------
    def fit_start(self) -> None:
        """The native trainer starts training. Re-installs the facade's signal guard: a trainer may have put
        its own SIGINT/SIGTERM handler in front of it (Lightning does)."""
        if self.signal_guard is not None:
            self.signal_guard.install()
        self.fit_started = time.perf_counter()
        if self.progress:
            self.progress.start()
        self._call("on_fit_start")

    def epoch_start(self, epoch: int) -> None:
        """``epoch`` counts from 1."""
        self.state.epoch = epoch
        self._loss_sum, self._loss_count = None, 0
        self._batches_in_epoch, self._epoch_closed = 0, False
        r = self._resume
        if r is not None:
            self._resume = None
            if r["epoch"] == epoch and 0 < r["batches_done"] < (self.state.steps_per_epoch or 0):
                # resumed mid-epoch: the epoch's loss sum and batch count carry on
                self._batches_in_epoch = r["batches_done"]
                self._loss_count = r["loss_count"]
                self._loss_sum = r["loss_sum"] if r["loss_count"] else None
        self._call("on_epoch_start")

    def train_batch_end(self, loss: Any, global_step: int, batch_idx: int) -> bool:
        """One optimizer step is done. ``loss`` is its detached loss (a framework tensor: no sync here).

        Returns:
            True when the epoch must end now: a stop was requested or ``max_steps`` is reached (the
            adapter still validates the partial epoch and calls :meth:`epoch_end`).
        """
        st = self.state
        st._loss, st.global_step, st.batch_idx = loss, global_step, batch_idx
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_count += 1
        self._batches_in_epoch += 1
        if global_step % self.log_every == 0 and global_step != self._last_logged_step:
            self._last_logged_step = global_step
            values = {"train/loss": float(loss if self.reduce_mean is None else self.reduce_mean(loss)),
                      "lr": self._lr()}
            st.metrics.update(values)
            if self.csv:
                self.csv.log(st.epoch, global_step, values)
            if not math.isfinite(values["train/loss"]):  # free here: the value is on the host already
                self._non_finite(values["train/loss"], f"at step {global_step}")
            for lg in self.loggers:
                lg.log(st.epoch, global_step, values)
        if self._batch_cbs:
            for cb in self._batch_cbs:
                cb.on_train_batch_end(st)
        if self.progress:
            self.progress.step(st.epoch, global_step, st.metrics)
        if self._interrupt is not None:
            spe = st.steps_per_epoch
            last_of_epoch = spe is not None and self._batches_in_epoch >= spe
            if not last_of_epoch and not (st.max_steps is not None and global_step >= st.max_steps):
                self._stop_for_signal()  # else at epoch end, so the checkpoint is an end-of-epoch one
        return st.should_stop or (st.max_steps is not None and global_step >= st.max_steps)

    def epoch_end(self, val_metrics: Optional[dict[str, float]]) -> bool:
        """Close the epoch: log its row, run validation/epoch hooks.

        Returns:
            True when training must end: a stop request (here or on another rank) or ``max_steps`` reached.
        """
        st = self.state
        self._epoch_closed = True
        values: dict[str, float] = {"lr": self._lr()}
        if self._loss_count:
            loss_sum = self._loss_sum if self.reduce_mean is None else self.reduce_mean(self._loss_sum)
            values["train/loss_epoch"] = float(loss_sum) / self._loss_count
            if not math.isfinite(values["train/loss_epoch"]):
                self._non_finite(values["train/loss_epoch"], f"in epoch {st.epoch} (its mean)")
        if val_metrics:
            values.update(val_metrics)
        st.metrics.update(values)
        if self.csv:
            self.csv.log(st.epoch, st.global_step, values)
        for lg in self.loggers:
            lg.log(st.epoch, st.global_step, values)
        if val_metrics:
            self._call("on_validation_end", dict(val_metrics))
        self._call("on_epoch_end")
        if self.progress:
            self.progress.epoch_end(st.epoch, st.global_step, st.metrics)
        if self._interrupt is not None:
            self._stop_for_signal()
        if self.reduce_any is not None and self.reduce_any(st.should_stop) and not st.should_stop:
            st.request_stop("another rank stopped")
        return st.should_stop or (st.max_steps is not None and st.global_step >= st.max_steps)

    def checkpoint_saved(self, path: Path) -> None:
        self._call("on_checkpoint_saved", path)

    def fit_end(self) -> None:
        if self.fit_started is not None:
            self.train_time_s = self._time_before + time.perf_counter() - self.fit_started
        if self.state.status == "running":
            self.state.status = "completed"
        if self.save_last_at_end and self.state.status in ("completed", "stopped_early"):
            self.save_resumable("last")
        if self.progress:
            self.progress.close()
        self._call("on_fit_end")

    def exception(self, error: BaseException) -> None:
        """Training raised: ``on_exception``, then ``on_fit_end`` with status failed / interrupted."""
        if self.fit_started is not None and not self.train_time_s:
            self.train_time_s = self._time_before + time.perf_counter() - self.fit_started
        self.state.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self._call("on_exception", error)
        if self.progress:
            self.progress.close()
        try:
            self._call("on_fit_end")
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass

    # -- faults -----------------------------------------------------------------------------------------
    def _non_finite(self, value: float, where: str) -> None:
        self.state.request_stop(f"loss is {value} {where}; stopped (the last good checkpoint is kept)",
                                status="failed")

    def request_interrupt(self, signum: int) -> None:
        """A signal arrived (called from the signal handler): stop at the next batch boundary."""
        self._interrupt = signum

    def _stop_for_signal(self) -> None:
        """Save ``checkpoints/interrupted.ckpt`` (+ ``.npz``) at this consistent point, then raise."""
        import signal as _signal

        from unified.errors import Interrupted

        signum = self._interrupt or _signal.SIGINT
        self._interrupt = None
        name = _signal.Signals(signum).name
        saved: Optional[Path] = None
        if self.state._controller is not None:
            saved = self.save_resumable("interrupted")
        where = f"; checkpoint: {saved}" if saved else ""
        self.interruption = Interrupted(signum, f"interrupted by {name} at epoch {self.state.epoch}, "
                                                f"step {self.state.global_step}{where}", str(saved) if saved else None)
        raise self.interruption

    def save_resumable(self, stem: str) -> Path:
        """Write ``checkpoints/<stem>.ckpt`` and ``<stem>.npz`` (atomically) and tell the callbacks."""
        d = self.state.run_dir / "checkpoints"
        path = d / f"{stem}.ckpt"
        self.state.save_checkpoint(path)
        self.state.save_weights(d / f"{stem}.npz")
        self.checkpoint_saved(path)
        return path

    # -- checkpoint state -----------------------------------------------------------------------------------
    def resume_state(self) -> dict[str, Any]:
        """What a checkpoint holds beyond the native trainer's state (one host sync: the epoch's loss sum)."""
        st = self.state
        names: dict[str, int] = {}
        cbs = []
        for cb in self.callbacks:
            cls = type(cb).__qualname__
            names[cls] = names.get(cls, -1) + 1
            cbs.append({"class": cls, "index": names[cls], "state": cb.state_dict()})
        elapsed = self._time_before + (time.perf_counter() - self.fit_started if self.fit_started is not None else 0.0)
        return {
            "format": STATE_FORMAT, "backend": st.backend, "epoch": st.epoch, "global_step": st.global_step,
            "batches_done": self._batches_in_epoch, "epoch_closed": self._epoch_closed,
            "steps_per_epoch": st.steps_per_epoch,
            "loss_sum": float(self._loss_sum) if self._loss_sum is not None else 0.0, "loss_count": self._loss_count,
            "last_logged_step": self._last_logged_step, "metrics": dict(st.metrics), "best": st.best,
            "train_time_s": elapsed, "callbacks": cbs,
        }

    def load_resume_state(self, rs: dict[str, Any]) -> list[str]:
        """Restore :meth:`resume_state` before training continues. Returns warnings (callbacks not found)."""
        st = self.state
        st.epoch, st.global_step = int(rs["epoch"]), int(rs["global_step"])
        st.batch_idx = max(int(rs["batches_done"]) - 1, 0)
        st.metrics.update(rs.get("metrics") or {})
        st.best = rs.get("best")
        self._last_logged_step = int(rs.get("last_logged_step", -1))
        self._time_before = float(rs.get("train_time_s", 0.0))
        self._batches_in_epoch, self._epoch_closed = int(rs["batches_done"]), bool(rs["epoch_closed"])
        self._resume = {"epoch": st.epoch, "batches_done": int(rs["batches_done"]),
                        "loss_sum": rs.get("loss_sum", 0.0), "loss_count": int(rs.get("loss_count", 0))}
        saved = {(c["class"], c["index"]): c["state"] for c in rs.get("callbacks", [])}
        names: dict[str, int] = {}
        warnings = []
        for cb in self.callbacks:
            cls = type(cb).__qualname__
            names[cls] = names.get(cls, -1) + 1
            key = (cls, names[cls])
            if key in saved:
                cb.load_state_dict(saved.pop(key))
            elif type(cb).state_dict is not Callback.state_dict:
                warnings.append(f"callback {cls} has no state in the checkpoint; it starts fresh")
        for (cls, _), left in saved.items():
            if left:
                warnings.append(f"the checkpoint holds state of callback {cls}, which this run does not have")
        return warnings
