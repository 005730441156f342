"""``unified tune`` as one call: :func:`tune` prepares, opens the study, runs or spawns the workers, reports."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

from unified.errors import SpecError
from unified.spec import Spec
from unified.tune.config import prepare
from unified.tune.results import TuneResult, report
from unified.tune.storage import redact
from unified.tune.study import open_study
from unified.tune.workers import spawn_workers, work


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
        echo: where progress lines go.
        tag: prefix of this process's progress lines (``[worker 1] ``).

    Returns:
        The study's counts and best trial (None with ``worker_only``).

    Raises:
        SpecError: a bad spec or option, or a worker process refused the spec or the storage.
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
        codes = spawn_workers(cfg, workers, keras_backend)
        if any(c == 2 for c in codes):
            raise SpecError(f"a worker process refused the spec or the storage (exit codes {codes})")
    if worker_only:
        return None
    result = report(cfg, study)
    result.worker_exit_codes = codes
    return result
