"""Pruning through the facade's callbacks: :class:`OptunaPruning`, the study's pruner, and which value a trial reports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from unified.callbacks import Callback, TrainState
from unified.spec import Spec
from unified.tune.optuna_lib import load_optuna

if TYPE_CHECKING:  # pragma: no cover
    from unified.tune.config import TuneConfig


class OptunaPruning(Callback):
    """Report ``metric`` to an Optuna trial at every epoch end; stop the run when the trial is pruned.

    The stop goes through :meth:`TrainState.request_stop` (status ``stopped_early``), the same way
    early stopping ends a run, so it works on every backend.

    Args:
        trial: the ``optuna.Trial``.
        metric: a logged key (``val/loss``, ``val/accuracy``...).
        direction: ``minimize`` or ``maximize`` (which epoch value is the trial's best).
    """

    def __init__(self, trial: Any, metric: str, direction: str) -> None:
        self.trial, self.metric, self.direction = trial, metric, direction
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.last: Optional[float] = None
        self.pruned_epoch: Optional[int] = None
        self.saw_nan = False

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.metrics.get(self.metric)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            self.saw_nan = True
            return
        self.last = value
        if self.best is None or (value < self.best if self.direction == "minimize" else value > self.best):
            self.best, self.best_epoch = value, state.epoch
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            self.pruned_epoch = state.epoch
            state.request_stop(f"pruned by optuna at epoch {state.epoch}: {self.metric}={value:.6g}",
                               status="stopped_early")


def keeps_best(spec: Spec, metric: str) -> bool:
    """Whether the run keeps its best epoch for ``metric``: a ``model_checkpoint`` monitoring it (the
    best checkpoint) or an ``early_stopping`` restoring its best weights. Then a trial's value is its
    best epoch's; otherwise the last epoch's (what the trained model scores)."""
    for cb in spec.callbacks:
        cfg = cb.config
        if cb.kind == "model_checkpoint" and cfg.monitor == metric and cfg.save_top_k != 0:  # type: ignore[attr-defined]
            return True
        if cb.kind == "early_stopping" and cfg.monitor == metric and cfg.restore_best_weights:  # type: ignore[attr-defined]
            return True
    return False


def make_pruner(cfg: "TuneConfig") -> Any:
    """The Optuna pruner ``tune.pruner`` names (median, hyperband, none), epochs as its steps."""
    optuna = load_optuna()
    t = cfg.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=t.pruner_startup_trials,
                                           n_warmup_steps=t.pruner_warmup_epochs)
    if t.pruner == "hyperband":
        max_epochs = cfg.spec.trainer.max_epochs if cfg.spec.trainer.max_steps is None else None
        return optuna.pruners.HyperbandPruner(min_resource=max(1, t.pruner_warmup_epochs),
                                              max_resource=max_epochs or "auto")
    return optuna.pruners.NopPruner()
