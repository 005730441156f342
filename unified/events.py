"""The backend-neutral half of the training loop's bookkeeping.

An adapter calls these methods from the native hook points (a Lightning ``Callback``, Ignite event
handlers, a Keras ``Callback``). They update the :class:`TrainState`, write ``metrics.csv``, draw the
progress line and call the user's callbacks, so all of it behaves the same on every backend.

Hot path: :meth:`RunEvents.train_batch_end` runs once per batch. It does no host sync except on
logging steps (``log_every_n_steps``), and calls only the callbacks that override the hook.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

from unified.callbacks import HOOKS, Callback, TrainState
from unified.logging import CsvLogger, ProgressDisplay


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


class RunEvents:
    """Receives the adapter's hook calls; owns the state, the CSV file, the progress display."""

    def __init__(self, state: TrainState, callbacks: list[Callback], csv: Optional[CsvLogger],
                 progress: Optional[ProgressDisplay], log_every_n_steps: int) -> None:
        self.state = state
        state._dispatcher = self
        self.callbacks = callbacks
        self._by_hook: dict[str, list[Callback]] = {h: [c for c in callbacks if _overrides(c, h)] for h in HOOKS}
        self._batch_cbs = self._by_hook["on_train_batch_end"]
        self.csv = csv
        self.progress = progress
        self.log_every = log_every_n_steps
        self._loss_sum: Any = None
        self._loss_count = 0
        self._last_logged_step = -1
        self._lr: Callable[[], float] = lambda: math.nan
        self.fit_started: Optional[float] = None
        self.train_time_s = 0.0

    def bind(self, controller: Any, lr: Callable[[], float]) -> None:
        """Attach the running adapter (checkpoints, weights) and a cheap learning-rate getter."""
        self.state._controller = controller
        self._lr = lr

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self._by_hook[hook]:
            getattr(cb, hook)(self.state, *args)

    # -- hooks the adapters call ------------------------------------------------------------------
    def fit_start(self) -> None:
        self.fit_started = time.perf_counter()
        if self.progress:
            self.progress.start()
        self._call("on_fit_start")

    def epoch_start(self, epoch: int) -> None:
        """``epoch`` counts from 1."""
        self.state.epoch = epoch
        self._loss_sum, self._loss_count = None, 0
        self._call("on_epoch_start")

    def train_batch_end(self, loss: Any, global_step: int, batch_idx: int) -> None:
        """``loss`` is the batch's detached loss (a framework tensor: no sync here)."""
        st = self.state
        st._loss, st.global_step, st.batch_idx = loss, global_step, batch_idx
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_count += 1
        if global_step % self.log_every == 0 and global_step != self._last_logged_step:
            self._last_logged_step = global_step
            values = {"train/loss": float(loss), "lr": self._lr()}
            st.metrics.update(values)
            if self.csv:
                self.csv.log(st.epoch, global_step, values)
        if self._batch_cbs:
            for cb in self._batch_cbs:
                cb.on_train_batch_end(st)
        if self.progress:
            self.progress.step(st.epoch, global_step, st.metrics)

    def epoch_end(self, val_metrics: Optional[dict[str, float]]) -> bool:
        """Close the epoch: log its row, run validation/epoch hooks. Returns whether to stop."""
        st = self.state
        values: dict[str, float] = {"lr": self._lr()}
        if self._loss_count:
            values["train/loss_epoch"] = float(self._loss_sum) / self._loss_count
        if val_metrics:
            values.update(val_metrics)
        st.metrics.update(values)
        if self.csv:
            self.csv.log(st.epoch, st.global_step, values)
        if val_metrics:
            self._call("on_validation_end", dict(val_metrics))
        self._call("on_epoch_end")
        if self.progress:
            self.progress.epoch_end(st.epoch, st.global_step, st.metrics)
        return st.should_stop

    def checkpoint_saved(self, path: Path) -> None:
        self._call("on_checkpoint_saved", path)

    def fit_end(self) -> None:
        if self.fit_started is not None:
            self.train_time_s = time.perf_counter() - self.fit_started
        if self.state.status == "running":
            self.state.status = "completed"
        if self.progress:
            self.progress.close()
        self._call("on_fit_end")

    def exception(self, error: BaseException) -> None:
        """Training raised: ``on_exception``, then ``on_fit_end`` with status failed / interrupted."""
        if self.fit_started is not None and not self.train_time_s:
            self.train_time_s = time.perf_counter() - self.fit_started
        self.state.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self._call("on_exception", error)
        if self.progress:
            self.progress.close()
        try:
            self._call("on_fit_end")
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
