"""The search space: Optuna distributions and suggestions for ``tune.space``, trial specs, the sampler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from unified.spec import Spec, TuneParamSpec, load_spec
from unified.tune.optuna_lib import load_optuna

if TYPE_CHECKING:  # pragma: no cover
    from unified.tune.config import TuneConfig


def encode_choice(value: Any) -> Any:
    """Optuna stores choices of None/bool/int/float/str; a list or mapping is stored as flow YAML."""
    import yaml

    return value if _is_plain(value) else yaml.safe_dump(value, default_flow_style=True).strip()


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def distribution(param: TuneParamSpec) -> Any:
    """The Optuna distribution of one ``tune.space`` entry (categorical choices encoded for storage)."""
    optuna = load_optuna()
    d = optuna.distributions
    if param.type == "categorical":
        return d.CategoricalDistribution([encode_choice(c) for c in param.choices or []])
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
            picked = trial.suggest_categorical(key, [encode_choice(c) for c in choices])
            out[key] = next(c for c in choices if encode_choice(c) == picked)
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
            value = next((c for c in param.choices or [] if encode_choice(c) == value), value)
        out[key] = value
    return out


def encode_params(space: dict[str, TuneParamSpec], params: dict[str, Any]) -> dict[str, Any]:
    """Spec values -> what Optuna stores (the inverse of :func:`decode_params`), e.g. for enqueued trials."""
    return {k: encode_choice(v) if space[k].type == "categorical" else v for k, v in params.items()}


def trial_spec(cfg: "TuneConfig", params: dict[str, Any]) -> Spec:
    """The spec of one trial: the tuned spec with ``params`` applied and no ``tune`` section."""
    data = cfg.spec.to_dict()
    data.pop("tune", None)
    return load_spec(data, dict(params))


def make_sampler(kind: str, seed: int) -> Any:
    """A sampler (``tpe`` or ``random``) whose random state is a function of ``(seed, trial number)``.

    Trial numbers are unique across all workers of a study, so workers sharing one study never draw
    the same random sequence (two TPE samplers with the same seed would suggest the same parameters),
    and a single worker's study is reproducible from the spec's seed.
    """
    import numpy as np

    optuna = load_optuna()

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
