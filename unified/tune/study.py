"""Creating or joining a study: the queued trials, and the attributes every joining worker must match.

Exactly ``n_trials`` trials, however many workers: the process that creates the study puts ``n_trials``
WAITING trials in the storage (``unified.n_trials`` is written last, so joiners wait for it); a joiner
checks the study was made for the same problem.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from unified.errors import SpecError
from unified.tune.config import TuneConfig
from unified.tune.optuna_lib import load_optuna
from unified.tune.pruning import make_pruner
from unified.tune.space import encode_params, make_sampler
from unified.tune.storage import open_storage, redact

ATTR_PREFIX = "unified."  # prefix of the study's user attributes written here


def open_study(cfg: TuneConfig, *, echo: Callable[[str], None] = print) -> Any:
    """Create the study with ``n_trials`` queued trials, or join the existing one of that name.

    Joining checks the study was made for the same metric, direction, space and backend. A larger
    ``n_trials`` than the study's queues the difference (do that from one process).

    Raises:
        SpecError: the study of that name was made for another spec, or not by ``unified tune``.
    """
    optuna = load_optuna()
    storage = open_storage(cfg.storage)
    kwargs = dict(study_name=cfg.study_name, storage=storage, sampler=make_sampler(cfg.tune.sampler, cfg.spec.seed),
                  pruner=make_pruner(cfg))
    attrs = study_attrs(cfg)
    try:
        study = optuna.create_study(direction=cfg.direction, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
        _join(study, cfg, attrs, echo)
        return study
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    for i in range(cfg.n_trials):
        enqueue(study, cfg, cfg.tune.enqueue[i] if i < len(cfg.tune.enqueue) else {})
    study.set_user_attr(f"{ATTR_PREFIX}n_trials", cfg.n_trials)  # last: joiners wait for it
    return study


def study_attrs(cfg: TuneConfig) -> dict[str, Any]:
    """The study's user attributes: metric, direction, space, backend and the problem the trials train."""
    space = {k: v.model_dump(mode="json") for k, v in cfg.tune.space.items()}
    # What the trials train, without where runs go or the search settings: joining workers must match.
    problem = {k: v for k, v in cfg.spec.to_dict().items() if k not in ("tune", "logging", "backend")}
    return {f"{ATTR_PREFIX}metric": cfg.metric, f"{ATTR_PREFIX}direction": cfg.direction,
            f"{ATTR_PREFIX}space": json.dumps(space, sort_keys=True), f"{ATTR_PREFIX}backend": cfg.backend,
            f"{ATTR_PREFIX}spec": json.dumps(problem, sort_keys=True)}


def enqueue(study: Any, cfg: TuneConfig, params: dict[str, Any]) -> None:
    """Queue one WAITING trial, with ``params`` (spec values, possibly none) fixed."""
    study.enqueue_trial(encode_params(cfg.tune.space, params))


def _join(study: Any, cfg: TuneConfig, attrs: dict[str, Any], echo: Callable[[str], None]) -> None:
    deadline = time.monotonic() + 60
    while f"{ATTR_PREFIX}n_trials" not in study.user_attrs:  # the creator is still queueing trials
        if time.monotonic() > deadline:
            raise SpecError(f"study {cfg.study_name!r} in {redact(cfg.storage)} was not made by unified tune "
                            f"(no {ATTR_PREFIX}n_trials attribute); use another --study-name")
        time.sleep(0.5)
    stored = study.user_attrs
    started = any(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))
    for key, value in attrs.items():
        if stored.get(key) == value:
            continue
        if not started:  # nothing ran yet (e.g. the first attempt stopped on a spec error): adopt this spec
            study.set_user_attr(key, value)
            continue
        what = key[len(ATTR_PREFIX):]
        detail = _differs(stored.get(key), value) if what == "spec" else \
            f"was created with {what} {stored.get(key)!r}, this spec has {value!r}"
        raise SpecError(f"study {cfg.study_name!r} in {redact(cfg.storage)}: {detail}; every worker of a study "
                        f"must tune the same spec: use another --study-name (or tune.study_name)")
    total = int(stored[f"{ATTR_PREFIX}n_trials"])
    if cfg.n_trials > total:
        for _ in range(cfg.n_trials - total):
            enqueue(study, cfg, {})
        study.set_user_attr(f"{ATTR_PREFIX}n_trials", cfg.n_trials)
        echo(f"study {cfg.study_name}: {cfg.n_trials - total} trial(s) added, {cfg.n_trials} in all")
    elif cfg.n_trials < total:
        echo(f"study {cfg.study_name}: already holds {total} trials (more than --n-trials {cfg.n_trials})")


def _differs(stored: Any, mine: Any) -> str:
    """Which top-level spec sections differ between two JSON-encoded specs."""
    try:
        a, b = json.loads(stored), json.loads(mine)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"the spec differs in {', '.join(keys)}"
    except (TypeError, ValueError):
        return "the spec differs"
