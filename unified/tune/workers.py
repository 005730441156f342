"""The workers: claiming a queued trial, its heartbeat, training it as a normal run, local worker processes.

A worker claims a trial with an atomic WAITING -> RUNNING update and stops when none is left; workers
on other machines join through the same storage URL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from unified.errors import NotSupportedError, SpecError, TrainingError
from unified.files import atomic_write_json
from unified.tune.config import TuneConfig, check_runnable
from unified.tune.optuna_lib import load_optuna
from unified.tune.pruning import OptunaPruning, keeps_best
from unified.tune.space import suggest, trial_spec
from unified.tune.storage import HEARTBEAT_S, redact
from unified.tune.text import fmt, one_line


@dataclass
class TrialOutcome:
    """How one trial ended, as :func:`run_trial` saw it."""

    number: int
    state: str  # complete | pruned | failed
    value: Optional[float]
    params: dict[str, Any]
    run_dir: Optional[str]
    seconds: float
    error: Optional[str] = None


def work(cfg: TuneConfig, study: Any, *, echo: Callable[[str], None] = print, tag: str = "") -> list[TrialOutcome]:
    """Run queued trials of ``study`` until none is left."""
    from optuna.trial import TrialState

    from unified.trainer import UnifiedTrainer

    done: list[TrialOutcome] = []
    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return done
    resolved = UnifiedTrainer(cfg.spec, backend=cfg.backend).spec
    check_runnable(cfg.spec, resolved, cfg.base_dir)
    while True:
        study._thread_local.cached_all_trials = None  # as Study.ask does: see the other workers' trials
        trial = claim(study)
        if trial is None:
            return done
        done.append(run_trial(cfg, study, trial, echo=echo, tag=tag))


def run_trial(cfg: TuneConfig, study: Any, trial: Any, *, echo: Callable[[str], None] = print,
              tag: str = "") -> TrialOutcome:
    """Train one trial as a normal run and tell Optuna how it ended (never raises for a failed trial)."""
    optuna = load_optuna()
    from optuna.trial import TrialState

    from unified.trainer import UnifiedTrainer

    start = time.perf_counter()
    n = trial.number
    params: dict[str, Any] = {}
    run_dir: Optional[Path] = None
    error: Optional[str] = None
    state, value = "failed", None
    cb = OptunaPruning(trial, cfg.metric, cfg.direction)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    with Heartbeat(study._storage, trial._trial_id):
        try:
            params = suggest(trial, cfg.tune.space)
            spec = trial_spec(cfg, {**params, "trainer.progress_bar": False})
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = Path(spec.logging.dir) / spec.name / cfg.backend / f"trial-{n}-{stamp}"
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trainer = UnifiedTrainer(spec, backend=cfg.backend, run_dir=run_dir, callbacks=[cb])
            trainer.base_dir = cfg.base_dir  # user code and relative data paths next to the spec file
            result = trainer.fit()
            if cb.pruned_epoch is not None:
                state, value = "pruned", cb.last
            elif cb.best is None:
                error = (f"{cfg.metric} was NaN/inf" if cb.saw_nan else
                         f"{cfg.metric} was never logged (a val/* metric needs a validation split)")
            else:
                state, value = "complete", cb.best if keeps_best(spec, cfg.metric) else cb.last
            trial.set_user_attr("status", result.status)
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except (SpecError, NotSupportedError, TrainingError, optuna.exceptions.OptunaError) as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - a crashing trial is recorded, the study goes on
            error = one_line(e)
        if error:
            trial.set_user_attr("error", error[:2000])
        if state == "complete":
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
    seconds = time.perf_counter() - start
    outcome = TrialOutcome(n, state, value, params, str(run_dir) if run_dir else None, seconds, error)
    if run_dir is not None and run_dir.is_dir():
        atomic_write_json(run_dir / "tune.json", {
            "study": cfg.study_name, "storage": redact(cfg.storage), "trial": n, "state": state,
            "metric": cfg.metric, "direction": cfg.direction, "value": value, "best_epoch": cb.best_epoch,
            "pruned_epoch": cb.pruned_epoch, "params": params, "error": error,
            "host": socket.gethostname(), "pid": os.getpid(),
        })
    shown = "  ".join(f"{k}={fmt(v)}" for k, v in params.items())
    result_txt = f"{cfg.metric}={value:.6g}" if value is not None else (error or "no value")
    echo(f"{tag}trial {n} {state:<8} {result_txt}  [{shown}]  ({seconds:.1f}s) {run_dir or ''}".rstrip())
    return outcome


# -- claiming ---------------------------------------------------------------------------------------

def claim(study: Any) -> Any:
    """Take one WAITING trial (atomic WAITING -> RUNNING in the storage), or None when none is left.

    Raises:
        TrainingError: the storage stayed busy through every retry.
    """
    optuna = load_optuna()
    from sqlalchemy.exc import OperationalError

    for attempt in range(30):
        try:
            optuna.storages.fail_stale_trials(study)  # trials of workers that died: FAIL
            trial_id = pop_waiting(study)
            break
        except (optuna.exceptions.StorageInternalError, OperationalError):  # SQLite busy beyond its timeout
            time.sleep(0.2 + 0.1 * attempt)
    else:
        raise TrainingError("the study storage stayed busy; cannot claim a trial")
    if trial_id is None:
        return None
    return optuna.Trial(study, trial_id)


def pop_waiting(study: Any) -> Optional[int]:
    """The id of a WAITING trial this process now owns (set RUNNING), or None when none is left.

    One conditional ``UPDATE ... WHERE state = 'WAITING'`` per candidate: the database lets exactly one
    worker change the row. (Optuna's own queue reads the state, then writes it; its ``SELECT ... FOR
    UPDATE`` makes that safe on PostgreSQL/MySQL but SQLite ignores it, so two workers could both take
    one trial.) Works on Optuna's RDB schema: table ``trials`` with ``state`` stored by name.
    """
    from sqlalchemy import text

    rdb = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDBStorage in a cache
    engine = rdb.engine
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(
            text("SELECT trial_id FROM trials WHERE study_id = :s AND state = 'WAITING' ORDER BY number"),
            {"s": study._study_id})]
    for trial_id in ids:
        with engine.begin() as conn:
            taken = conn.execute(
                text("UPDATE trials SET state = 'RUNNING', datetime_start = :now "
                     "WHERE trial_id = :t AND state = 'WAITING'"), {"now": datetime.now(), "t": trial_id}).rowcount
        if taken == 1:
            return trial_id
    return None


class Heartbeat:
    """Records the trial's heartbeat so other workers can mark it failed if this process dies."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(storage, trial_id), daemon=True)

    def _run(self, storage: Any, trial_id: int) -> None:
        while not self._stop.is_set():
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is harmless within the grace period
                pass
            self._stop.wait(HEARTBEAT_S)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- local worker processes -------------------------------------------------------------------------

def spawn_workers(cfg: TuneConfig, workers: int, keras_backend: Optional[str]) -> list[int]:
    """Run ``workers`` ``unified tune --worker-only`` processes on this machine; their exit codes.

    Raises:
        SpecError: the spec is not a file the processes can load.
    """
    if cfg.spec_path is None:
        raise SpecError("--workers > 1 needs the spec as a file (each worker process loads it)")
    cmd = [sys.executable, "-m", "unified", "tune", cfg.spec_path, "--backend", cfg.backend,
           "--storage", cfg.storage, "--study-name", cfg.study_name, "--n-trials", str(cfg.n_trials),
           "--out", str(cfg.out_dir), "--worker-only"]
    if keras_backend:
        cmd += ["--keras-backend", keras_backend]
    for o in cfg.overrides:
        cmd += ["--set", o]
    # K processes on one machine: split the cores instead of letting every framework take them all
    # (oversubscribed BLAS/OpenMP threads make small models many times slower).
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env.setdefault(var, threads)
    procs = [subprocess.Popen(cmd + ["--worker-tag", f"[worker {i + 1}] "], env=env) for i in range(workers)]
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C: let them record their trials as failed
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
