"""Hyperparameter search over a spec with Optuna (``unified tune``).

Each trial is a normal run (``<logging.dir>/<name>/<backend>/trial-<n>-<stamp>``) trained through
:class:`~unified.trainer.UnifiedTrainer`, so every backend tunes the same way. Pruning goes through the
facade's callbacks: :class:`OptunaPruning` reports the metric at every epoch end and asks the run to stop
(``TrainState.request_stop``) when Optuna says the trial should be pruned.

Exactly ``n_trials`` trials, however many workers: the process that creates the study puts ``n_trials``
WAITING trials in the storage; a worker claims one with an atomic WAITING -> RUNNING update (Optuna's own
queue) and stops when none is left. Workers on other machines join through the same storage URL.

Optuna is imported inside the functions (``pip install "unified-trainer[tune]"``): importing this
package imports neither Optuna nor a framework.

Modules:
    command: :func:`tune`, the whole command.
    config: :class:`TuneConfig`, :func:`prepare`, :func:`check_runnable`, ``--set`` overrides.
    space: suggestions and distributions for ``tune.space``, :func:`decode_params`, :func:`trial_spec`,
        the per-trial seeded sampler.
    storage: :func:`storage_url`, :func:`redact`, :func:`open_storage` (heartbeat settings).
    study: :func:`open_study` (create with queued trials, or join and check), the study's attributes.
    workers: :func:`work`, :func:`run_trial`, :func:`claim`, the heartbeat, local worker processes.
    pruning: :class:`OptunaPruning`, :func:`keeps_best`, the pruner.
    results: :class:`TuneResult`, :func:`report` (best.yaml, trials.csv, history.png, study.json).
    optuna_lib, text: the lazy Optuna import; how values and errors are worded.
"""

from __future__ import annotations

from unified.tune.command import tune
from unified.tune.config import TuneConfig, check_runnable, prepare
from unified.tune.optuna_lib import INSTALL_HINT
from unified.tune.pruning import OptunaPruning, keeps_best
from unified.tune.results import TuneResult, report
from unified.tune.space import decode_params, suggest, trial_spec
from unified.tune.storage import GRACE_S, HEARTBEAT_S, POSTGRES_HINT, open_storage, redact, storage_url
from unified.tune.study import open_study
from unified.tune.workers import TrialOutcome, claim, run_trial, work

_claim = claim  # the name before the split into a package

__all__ = ["tune", "prepare", "open_study", "work", "report", "OptunaPruning", "TuneResult", "TuneConfig",
           "suggest", "trial_spec", "redact", "storage_url", "open_storage", "check_runnable", "decode_params",
           "keeps_best", "run_trial", "claim", "TrialOutcome", "INSTALL_HINT", "POSTGRES_HINT", "HEARTBEAT_S",
           "GRACE_S"]
