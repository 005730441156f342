"""The settings of a search: :class:`TuneConfig`, resolved from the spec and the command line by :func:`prepare`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from unified.errors import SpecError
from unified.spec import Spec, load_spec, tune_metric


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
        """The spec's ``tune`` section."""
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

    pairs = override_strings(overrides)
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
    refusals, the data, user metrics' names against ``tune.metric``. Imports the framework.

    Raises:
        SpecError / DataError / NotSupportedError: what the first trial would have failed with.
    """
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


def override_strings(overrides: Optional[Union[dict[str, Any], list[str]]]) -> list[str]:
    """``--set`` strings (``key=value``, value as flow YAML) from a dict or a list of overrides."""
    import yaml

    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    return [str(o) for o in overrides]
