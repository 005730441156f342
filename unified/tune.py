"""Hyperparameter search over a spec with Optuna (``unified tune``).

Each trial is a normal run (``<logging.dir>/<name>/<backend>/trial-<n>-<stamp>``) trained through
:class:`~unified.trainer.UnifiedTrainer`, so every backend tunes the same way. Pruning goes through the
facade's callbacks: :class:`OptunaPruning` reports the metric at every epoch end and asks the run to stop
(``TrainState.request_stop``) when Optuna says the trial should be pruned.

Exactly ``n_trials`` trials, however many workers: the process that creates the study puts ``n_trials``
WAITING trials in the storage; a worker claims one with an atomic WAITING -> RUNNING update (Optuna's own
queue) and stops when none is left. Workers on other machines join through the same storage URL.

Optuna is imported inside the functions (``pip install "unified-trainer[tune]"``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Union

from unified.callbacks import Callback, TrainState
from unified.errors import BackendUnavailableError, NotSupportedError, SpecError, TrainingError
from unified.files import atomic_write, atomic_write_json, atomic_write_text
from unified.spec import Spec, TuneParamSpec, load_spec, tune_metric

INSTALL_HINT = 'pip install "unified-trainer[tune]"'
POSTGRES_HINT = 'pip install "unified-trainer[postgres]"'
_ATTR = "unified."  # prefix of the study's user attributes written here
HEARTBEAT_S = 10
GRACE_S = 60


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise BackendUnavailableError(f"unified tune needs Optuna: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# -- settings --------------------------------------------------------------------------------------

@dataclass
class TuneConfig:
    """Everything a worker needs, resolved from the spec and the command line."""

    spec: Spec  # the spec after overrides, not resolved (trial params are applied to this)
    spec_path: Optional[str]
    base_dir: Optional[str]
    backend: str
    overrides: list[str]
    metric: str
    direction: str
    n_trials: int
    storage: str
    study_name: str
    out_dir: Path

    @property
    def tune(self) -> Any:
        return self.spec.tune


def prepare(spec: Union[str, os.PathLike, dict, Spec], backend: Optional[str] = None, *,
            overrides: Optional[Union[dict[str, Any], list[str]]] = None, n_trials: Optional[int] = None,
            storage: Optional[str] = None, study_name: Optional[str] = None,
            out: Optional[Union[str, os.PathLike]] = None, check: bool = True) -> TuneConfig:
    """Validate the spec and the options and resolve every default (no trial runs, no storage opened).

    With ``check`` (the default) the backend's refusals, the data and user metric names are checked
    too, which imports the framework; ``check=False`` leaves that to the worker processes.

    Raises:
        SpecError: no ``tune:`` section, a bad option; NotSupportedError / BackendUnavailableError: the
            backend cannot run this spec at all.
    """
    from unified.trainer import UnifiedTrainer

    pairs = _override_strings(overrides)
    trainer = UnifiedTrainer(spec, backend=backend, overrides=pairs)  # resolves the backend, validates
    raw = load_spec(spec, pairs)
    if raw.tune is None:
        raise SpecError("the spec has no tune section; add e.g. tune: {n_trials: 20, space: {optimizer.lr: "
                        "{type: float, low: 1.0e-4, high: 0.1, log: true}}}", path="tune")
    if n_trials is not None and n_trials <= 0:
        raise SpecError(f"--n-trials: expected an integer > 0, got {n_trials}")
    if study_name is not None:
        if not re.match(r"^[\w.\-]+$", study_name):
            raise SpecError(f"--study-name: expected letters, digits, '.', '-' or '_', got {study_name!r}")
        raw.tune.study_name = study_name
    # Up front, what every trial would trip over (exit 2 instead of N failed trials): the backend's
    # refusals, the data, user metrics' names against tune.metric.
    if check:
        check_runnable(raw, trainer.spec, trainer.base_dir)
    metric, direction = tune_metric(raw)
    name = raw.tune.study_name or raw.name
    log_dir = Path(raw.logging.dir).resolve()
    url = storage or raw.tune.storage or f"sqlite:///{log_dir / raw.name / 'tune.db'}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif "://" not in url:
        raise SpecError(f"--storage: expected a database URL such as sqlite:///runs/tune.db or "
                        f"postgresql://user:pass@host/db, got {url!r}")
    out_dir = Path(out) if out is not None else log_dir / raw.name / "tune" / name
    return TuneConfig(spec=raw, spec_path=trainer.spec_source, base_dir=trainer.base_dir, backend=trainer.backend,
                      overrides=pairs, metric=metric, direction=direction,
                      n_trials=n_trials or raw.tune.n_trials, storage=url, study_name=name, out_dir=out_dir)


def check_runnable(raw: Spec, resolved: Spec, base_dir: Optional[str]) -> None:
    """What every trial would trip over, checked once (exit 2 instead of N failed trials): the backend's
    refusals, the data, user metrics' names against ``tune.metric``. Imports the framework."""
    from unified.data import load_dataset
    from unified.metrics import build_metrics
    from unified.registry import load_adapter
    from unified.spec import check_monitors

    load_adapter(resolved.backend).check_spec(resolved)  # type: ignore[arg-type]
    dataset = load_dataset(resolved, base_dir)
    check_monitors(raw, [m.name for m in build_metrics(resolved, dataset.num_classes, base_dir)])
    metric, _ = tune_metric(raw)
    if metric.startswith("val/") and dataset.val is None:
        raise SpecError(f"{metric!r} is only logged with a validation split; set data.val_fraction > 0 "
                        f"or tune a train/* metric", path="tune.metric")


def _override_strings(overrides: Optional[Union[dict[str, Any], list[str]]]) -> list[str]:
    import yaml

    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return [str(o) for o in overrides]


def redact(url: str) -> str:
    """The storage URL with its password hidden (for printing and files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy knows: show as is
        return url


# -- parameters --------------------------------------------------------------------------------------

def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _encode(value: Any) -> Any:
    """Optuna stores choices of None/bool/int/float/str; a list or mapping is stored as flow YAML."""
    import yaml

    return value if _is_plain(value) else yaml.safe_dump(value, default_flow_style=True).strip()


def _distribution(param: TuneParamSpec) -> Any:
    optuna = _optuna()
    d = optuna.distributions
    if param.type == "categorical":
        return d.CategoricalDistribution([_encode(c) for c in param.choices or []])
    if param.type == "int":
        return d.IntDistribution(int(param.low), int(param.high), log=param.log,  # type: ignore[arg-type]
                                 step=int(param.step or 1))
    return d.FloatDistribution(float(param.low), float(param.high), log=param.log,  # type: ignore[arg-type]
                               step=param.step)


def suggest(trial: Any, space: dict[str, TuneParamSpec]) -> dict[str, Any]:
    """Ask the trial for every key of ``space``; returns ``{dotted key: spec value}``."""
    out: dict[str, Any] = {}
    for key, param in space.items():
        if param.type == "categorical":
            choices = list(param.choices or [])
            picked = trial.suggest_categorical(key, [_encode(c) for c in choices])
            out[key] = next(c for c in choices if _encode(c) == picked)
        elif param.type == "int":
            out[key] = trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1),  # type: ignore[arg-type]
                                         log=param.log)
        else:
            out[key] = trial.suggest_float(key, float(param.low), float(param.high), step=param.step,  # type: ignore[arg-type]
                                           log=param.log)
    return out


def decode_params(space: dict[str, TuneParamSpec], params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params back to spec values (categorical choices that are lists or mappings)."""
    out = {}
    for key, value in params.items():
        param = space.get(key)
        if param is not None and param.type == "categorical":
            value = next((c for c in param.choices or [] if _encode(c) == value), value)
        out[key] = value
    return out


def trial_spec(cfg: TuneConfig, params: dict[str, Any]) -> Spec:
    """The spec of one trial: the tuned spec with ``params`` applied and no ``tune`` section."""
    data = cfg.spec.to_dict()
    data.pop("tune", None)
    return load_spec(data, dict(params))


# -- sampler, pruner, storage ------------------------------------------------------------------------

def _sampler(kind: str, seed: int) -> Any:
    """A sampler whose random state is a function of ``(seed, trial number)``.

    Trial numbers are unique across all workers of a study, so workers sharing one study never draw
    the same random sequence (two TPE samplers with the same seed would suggest the same parameters),
    and a single worker's study is reproducible from the spec's seed.
    """
    import numpy as np

    optuna = _optuna()

    class PerTrialSeeded(optuna.samplers.BaseSampler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self._number: Optional[int] = None
            self._inner: Any = None

        def _for(self, trial: Any) -> Any:
            if trial.number != self._number:
                s = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
                self._inner = (optuna.samplers.TPESampler(seed=s) if kind == "tpe"
                               else optuna.samplers.RandomSampler(seed=s))
                self._number = trial.number
            return self._inner

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:  # seeds come from the trial number
            pass

    return PerTrialSeeded()


def _pruner(cfg: TuneConfig) -> Any:
    optuna = _optuna()
    t = cfg.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=t.pruner_startup_trials,
                                           n_warmup_steps=t.pruner_warmup_epochs)
    if t.pruner == "hyperband":
        max_epochs = cfg.spec.trainer.max_epochs if cfg.spec.trainer.max_steps is None else None
        return optuna.pruners.HyperbandPruner(min_resource=max(1, t.pruner_warmup_epochs),
                                              max_resource=max_epochs or "auto")
    return optuna.pruners.NopPruner()


def storage_url(url: str) -> str:
    """``url`` with the PostgreSQL driver made explicit when only psycopg2 is installed.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; the ``postgres`` extra installs psycopg2, so a
    plain ``postgresql://`` (or ``postgres://``) URL becomes ``postgresql+psycopg2://`` when psycopg 3 is absent.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str) -> Any:
    """An Optuna RDB storage for ``url`` (SQLite waits for locks; every backend gets heartbeats)."""
    optuna = _optuna()
    url = storage_url(url)
    engine: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Optional[BaseException] = None
    for attempt in range(4):  # two workers creating the tables of a fresh database at once may collide
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
        except ImportError as e:  # the database driver
            cause = e.__cause__ or e
            hint = POSTGRES_HINT if url.startswith("postgres") else "install the database driver for this URL"
            raise BackendUnavailableError(f"--storage {redact(url)}: {_one_line(cause)} ({hint})") from None
        except Exception as e:  # noqa: BLE001 - any driver error: a clear line, exit 2
            last = e
            if type(e).__name__ in ("ArgumentError", "NoSuchModuleError", "ValueError"):
                break
            time.sleep(0.5 + attempt)
    raise SpecError(f"--storage {redact(url)}: cannot open the study storage: {_one_line(last)}")


def _study_attrs(cfg: TuneConfig) -> dict[str, Any]:
    space = {k: v.model_dump(mode="json") for k, v in cfg.tune.space.items()}
    # What the trials train, without where runs go or the search settings: joining workers must match.
    problem = {k: v for k, v in cfg.spec.to_dict().items() if k not in ("tune", "logging", "backend")}
    return {f"{_ATTR}metric": cfg.metric, f"{_ATTR}direction": cfg.direction,
            f"{_ATTR}space": json.dumps(space, sort_keys=True), f"{_ATTR}backend": cfg.backend,
            f"{_ATTR}spec": json.dumps(problem, sort_keys=True)}


def _differs(stored: Any, mine: Any) -> str:
    """Which top-level spec sections differ between two JSON-encoded specs."""
    try:
        a, b = json.loads(stored), json.loads(mine)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"the spec differs in {', '.join(keys)}"
    except (TypeError, ValueError):
        return "the spec differs"


def open_study(cfg: TuneConfig, *, echo: Callable[[str], None] = print) -> Any:
    """Create the study with ``n_trials`` queued trials, or join the existing one of that name.

    Joining checks the study was made for the same metric, direction, space and backend. A larger
    ``n_trials`` than the study's queues the difference (do that from one process).
    """
    optuna = _optuna()
    storage = open_storage(cfg.storage)
    kwargs = dict(study_name=cfg.study_name, storage=storage, sampler=_sampler(cfg.tune.sampler, cfg.spec.seed),
                  pruner=_pruner(cfg))
    attrs = _study_attrs(cfg)
    try:
        study = optuna.create_study(direction=cfg.direction, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
        _join(study, cfg, attrs, echo)
        return study
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    for i in range(cfg.n_trials):
        _enqueue(study, cfg, cfg.tune.enqueue[i] if i < len(cfg.tune.enqueue) else {})
    study.set_user_attr(f"{_ATTR}n_trials", cfg.n_trials)  # last: joiners wait for it
    return study


def _enqueue(study: Any, cfg: TuneConfig, params: dict[str, Any]) -> None:
    encoded = {k: _encode(v) if cfg.tune.space[k].type == "categorical" else v for k, v in params.items()}
    study.enqueue_trial(encoded)


def _join(study: Any, cfg: TuneConfig, attrs: dict[str, Any], echo: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 60
    while f"{_ATTR}n_trials" not in study.user_attrs:  # the creator is still queueing trials
        if time.monotonic() > deadline:
            raise SpecError(f"study {cfg.study_name!r} in {redact(cfg.storage)} was not made by unified tune "
                            f"(no {_ATTR}n_trials attribute); use another --study-name")
        time.sleep(0.5)
    stored = study.user_attrs
    started = any(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))
    for key, value in attrs.items():
        if stored.get(key) == value:
            continue
        if not started:  # nothing ran yet (e.g. the first attempt stopped on a spec error): adopt this spec
            study.set_user_attr(key, value)
            continue
        what = key[len(_ATTR):]
        detail = _differs(stored.get(key), value) if what == "spec" else \
            f"was created with {what} {stored.get(key)!r}, this spec has {value!r}"
        raise SpecError(f"study {cfg.study_name!r} in {redact(cfg.storage)}: {detail}; every worker of a study "
                        f"must tune the same spec: use another --study-name (or tune.study_name)")
    total = int(stored[f"{_ATTR}n_trials"])
    if cfg.n_trials > total:
        for _ in range(cfg.n_trials - total):
            _enqueue(study, cfg, {})
        study.set_user_attr(f"{_ATTR}n_trials", cfg.n_trials)
        echo(f"study {cfg.study_name}: {cfg.n_trials - total} trial(s) added, {cfg.n_trials} in all")
    elif cfg.n_trials < total:
        echo(f"study {cfg.study_name}: already holds {total} trials (more than --n-trials {cfg.n_trials})")


def _pop_waiting(study: Any) -> Optional[int]:
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


def _claim(study: Any) -> Any:
    """Take one WAITING trial (atomic WAITING -> RUNNING in the storage), or None when none is left."""
    optuna = _optuna()
    from sqlalchemy.exc import OperationalError

    for attempt in range(30):
        try:
            optuna.storages.fail_stale_trials(study)  # trials of workers that died: FAIL
            trial_id = _pop_waiting(study)
            break
        except (optuna.exceptions.StorageInternalError, OperationalError):  # SQLite busy beyond its timeout
            time.sleep(0.2 + 0.1 * attempt)
    else:
        raise TrainingError("the study storage stayed busy; cannot claim a trial")
    if trial_id is None:
        return None
    return optuna.Trial(study, trial_id)


class _Heartbeat:
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

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- pruning through the facade's callbacks -----------------------------------------------------------

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


# -- one worker -------------------------------------------------------------------------------------

@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    value: Optional[float]
    params: dict[str, Any]
    run_dir: Optional[str]
    seconds: float
    error: Optional[str] = None


def run_trial(cfg: TuneConfig, study: Any, trial: Any, *, echo: Callable[[str], None] = print,
              tag: str = "") -> TrialOutcome:
    """Train one trial as a normal run and tell Optuna how it ended (never raises for a failed trial)."""
    optuna = _optuna()
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
    with _Heartbeat(study._storage, trial._trial_id):
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
            error = _one_line(e)
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
    shown = "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    result_txt = f"{cfg.metric}={value:.6g}" if value is not None else (error or "no value")
    echo(f"{tag}trial {n} {state:<8} {result_txt}  [{shown}]  ({seconds:.1f}s) {run_dir or ''}".rstrip())
    return outcome


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
        trial = _claim(study)
        if trial is None:
            return done
        done.append(run_trial(cfg, study, trial, echo=echo, tag=tag))


# -- the whole command ------------------------------------------------------------------------------

@dataclass
class TuneResult:
    """What :func:`tune` returns (also written to ``<out>/study.json``)."""

    study_name: str
    storage: str
    out_dir: Path
    metric: str
    direction: str
    counts: dict[str, int]
    best: Optional[dict[str, Any]]
    files: list[str] = field(default_factory=list)
    worker_exit_codes: list[int] = field(default_factory=list)


def tune(spec: Union[str, os.PathLike, dict, Spec], backend: Optional[str] = None, *,
         overrides: Optional[Union[dict[str, Any], list[str]]] = None, n_trials: Optional[int] = None,
         storage: Optional[str] = None, study_name: Optional[str] = None, workers: int = 1,
         out: Optional[Union[str, os.PathLike]] = None, keras_backend: Optional[str] = None,
         worker_only: bool = False, echo: Callable[[str], None] = print, tag: str = "") -> Optional[TuneResult]:
    """Search the spec's ``tune.space`` with Optuna; every trial is a normal run directory.

    Args:
        spec: the spec (path, dict or Spec) with a ``tune:`` section.
        backend: training backend (default: the spec's, else the first installed).
        overrides: ``--set`` overrides applied before tuning.
        n_trials, storage, study_name: override ``tune.n_trials`` / ``tune.storage`` / ``tune.study_name``.
        workers: local worker processes sharing the storage (1: run the trials in this process).
        out: where ``best.yaml``, ``history.png``, ``trials.csv``, ``study.json`` go
            (default ``<logging.dir>/<name>/tune/<study_name>``).
        keras_backend: passed to the worker processes as ``--keras-backend``.
        worker_only: run queued trials and return None, without the final report.

    Returns:
        The study's counts and best trial (None with ``worker_only``).
    """
    if workers < 1:
        raise SpecError(f"--workers: expected an integer >= 1, got {workers}")
    # The backend and data checks import the framework: done only where trials run, before the first claim.
    cfg = prepare(spec, backend, overrides=overrides, n_trials=n_trials, storage=storage, study_name=study_name,
                  out=out, check=False)
    study = open_study(cfg, echo=echo)
    if not worker_only:
        echo(f"study {cfg.study_name} in {redact(cfg.storage)}: {cfg.direction} {cfg.metric}, "
             f"{cfg.n_trials} trials, backend {cfg.backend}, {workers} worker(s)")
    codes: list[int] = []
    if workers == 1:
        work(cfg, study, echo=echo, tag=tag)
    else:
        codes = _spawn_workers(cfg, workers, keras_backend)
        if any(c == 2 for c in codes):
            raise SpecError(f"a worker process refused the spec or the storage (exit codes {codes})")
    if worker_only:
        return None
    result = report(cfg, study)
    result.worker_exit_codes = codes
    return result


def _spawn_workers(cfg: TuneConfig, workers: int, keras_backend: Optional[str]) -> list[int]:
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


def report(cfg: TuneConfig, study: Any) -> TuneResult:
    """Write ``best.yaml``, ``trials.csv``, ``history.png`` and ``study.json`` for the study as it stands."""
    optuna = _optuna()
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = []
    best: Optional[dict[str, Any]] = None
    if complete:
        bt = study.best_trial
        params = decode_params(cfg.tune.space, bt.params)
        spec = trial_spec(cfg, params)
        from unified.trainer import UnifiedTrainer

        import yaml

        resolved = UnifiedTrainer(spec, backend=cfg.backend).spec.to_dict()
        resolved.pop("tune", None)  # a plain spec for `unified run`
        atomic_write_text(out / "best.yaml",
                          f"# best trial {bt.number} of study {cfg.study_name}: {cfg.metric}={bt.value!r}\n"
                          + yaml.safe_dump(resolved, sort_keys=False))
        files.append("best.yaml")
        best = {"number": bt.number, "value": bt.value, "params": params, "run_dir": bt.user_attrs.get("run_dir")}
    _write_trials_csv(out / "trials.csv", cfg, trials)
    files.append("trials.csv")
    _plot_history(out / "history.png", cfg, trials)
    files.append("history.png")
    result = TuneResult(study_name=cfg.study_name, storage=redact(cfg.storage), out_dir=out, metric=cfg.metric,
                        direction=cfg.direction, counts=counts, best=best, files=files)
    atomic_write_json(out / "study.json", {
        "study": cfg.study_name, "storage": result.storage, "backend": cfg.backend, "metric": cfg.metric,
        "direction": cfg.direction, "n_trials": len(trials), "counts": counts, "best": best,
        "host": platform.node(),
    })
    result.files.append("study.json")
    return result


def _write_trials_csv(path: Path, cfg: TuneConfig, trials: list[Any]) -> None:
    keys = list(cfg.tune.space)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", *keys, "last_epoch", "duration_s", "host", "run_dir", "error"])
    for t in trials:
        params = decode_params(cfg.tune.space, t.params)
        last_epoch = max(t.intermediate_values) if t.intermediate_values else ""
        dur = t.duration.total_seconds() if t.duration is not None else ""
        w.writerow([t.number, t.state.name.lower(), "" if t.value is None else repr(t.value),
                    *(_fmt(params.get(k, "")) for k in keys), last_epoch,
                    f"{dur:.3f}" if dur != "" else "", t.user_attrs.get("host", ""), t.user_attrs.get("run_dir", ""),
                    t.user_attrs.get("error", "")])
    atomic_write_text(path, buf.getvalue())


def _plot_history(path: Path, cfg: TuneConfig, trials: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    if done:
        ax.plot(*zip(*done), "o", color="C0", label="complete")
        xs, ys, best = [], [], None
        for n, v in done:
            best = v if best is None or (v < best if cfg.direction == "minimize" else v > best) else best
            xs.append(n)
            ys.append(best)
        xs.append(max(t.number for t in trials))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="C1", label="best so far")
        bn, bv = next((n, v) for n, v in done if v == ys[-1])
        ax.plot([bn], [bv], "*", color="C1", markersize=14, markeredgecolor="k", label=f"best: trial {bn}")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="0.45", label="pruned (last reported)")
    if failed:
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(failed, [0.03] * len(failed), "v", color="C3", transform=tr, label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(cfg.metric)
    ax.set_title(f"{cfg.study_name}: {cfg.metric} by trial ({cfg.direction}, backend {cfg.backend})", fontsize=10)
    ax.grid(alpha=0.3)
    if trials:
        ax.set_xlim(-0.5, max(t.number for t in trials) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if done or pruned or failed:
        ax.legend(fontsize=8)
    fig.tight_layout()

    def _save(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    try:
        atomic_write(path, _save)
    finally:
        plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _one_line(error: Optional[BaseException]) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["tune", "prepare", "open_study", "work", "report", "OptunaPruning", "TuneResult", "TuneConfig",
           "suggest", "trial_spec", "redact"]
