"""Rules over a whole spec: the logged keys, monitors, the key ``best`` follows, the tuned metric and space."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from unified.errors import SpecError
from unified.spec.messages import _choice_msg, _to_spec_error
from unified.spec.names import HIGHER_IS_BETTER

if TYPE_CHECKING:
    from unified.spec.schema import Spec


def logged_keys(spec: Spec, metric_names: list[str]) -> list[str]:
    """Every key the facade logs for ``spec`` (what ``monitor`` may name)."""
    keys = ["train/loss", "train/loss_epoch", "lr", "val/loss"]
    keys += [f"val/{m}" for m in metric_names]
    return keys


def check_monitors(spec: Spec, metric_names: list[str]) -> None:
    """Raise SpecError if a callback or scheduler monitors a key that is never logged."""
    keys = logged_keys(spec, metric_names)
    for i, cb in enumerate(spec.callbacks):
        monitor = getattr(cb.config, "monitor", None)
        if monitor is not None and monitor not in keys:
            raise SpecError(_choice_msg(monitor, keys, "not a logged key"), path=f"callbacks[{i}].{cb.kind}.monitor")
    if spec.scheduler is not None and spec.scheduler.name == "reduce_on_plateau":
        if spec.scheduler.monitor not in keys:
            raise SpecError(_choice_msg(spec.scheduler.monitor, keys, "not a logged key"), path="scheduler.monitor")
    tune = getattr(spec, "tune", None)
    if tune is not None and tune.metric is not None and tune.metric not in keys:
        raise SpecError(_choice_msg(tune.metric, keys, "not a logged key"), path="tune.metric")


BEST_MONITOR_KINDS = ("model_checkpoint", "early_stopping")  # whose monitor ``best`` follows, in this order


def best_monitor(spec: Spec) -> tuple[str, str]:
    """``(key, mode)`` that ``summary.json``'s ``best``, ``unified compare`` and ``unified tune`` follow.

    The one rule: the first ``model_checkpoint``'s monitor, else the first ``early_stopping``'s, else
    ``("val/loss", "min")``.
    """
    for kind in BEST_MONITOR_KINDS:
        for cb in spec.callbacks:
            if cb.kind == kind:
                return cb.config.monitor, cb.config.mode  # type: ignore[attr-defined]
    return "val/loss", "min"


def tune_metric(spec: Spec) -> tuple[str, str]:
    """``(metric, direction)`` that ``unified tune`` optimizes, with the defaults resolved.

    The metric defaults to :func:`best_monitor`'s key. The direction defaults to the mode of a callback monitoring that metric, else
    ``maximize`` for accuracy, f1/precision/recall macro, auroc and r2, else ``minimize``.
    """
    tune = spec.tune
    metric = tune.metric if tune is not None else None
    monitors = [(cb.config.monitor, cb.config.mode) for cb in spec.callbacks  # type: ignore[attr-defined]
                if cb.kind in ("model_checkpoint", "early_stopping")]
    if metric is None:
        metric = best_monitor(spec)[0]
    direction = tune.direction if tune is not None else None
    if direction is None:
        modes = [mode for monitor, mode in monitors if monitor == metric]
        if modes:
            direction = "maximize" if modes[0] == "max" else "minimize"
        else:
            direction = "maximize" if metric.split("/")[-1] in HIGHER_IS_BETTER else "minimize"
    return metric, direction


def check_tune_space(spec: Spec) -> None:
    """Raise (a ValueError naming ``tune.space.<key>``) unless every value of every range makes a valid spec.

    Each key is applied with ``--set`` rules to the spec without its ``tune`` section, once per end of the
    range (or per choice), and the result validated: an unknown key or a value the field refuses fails here,
    before any trial runs.
    """
    from unified.spec.loading import apply_overrides
    from unified.spec.schema import Spec

    assert spec.tune is not None
    space = spec.tune.space
    for i, params in enumerate(spec.tune.enqueue):
        for key, value in params.items():
            where = f"tune.enqueue[{i}].{key}"
            if key not in space:
                raise ValueError(f"{where}: " + _choice_msg(key, list(space), "not a tune.space key"))
            p = space[key]
            if p.type == "categorical":
                if value not in (p.choices or []):
                    raise ValueError(f"{where}: {value!r} is not one of the choices {p.choices}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high:  # type: ignore[operator]
                raise ValueError(f"{where}: expected a number in [{p.low}, {p.high}], got {value!r}")
    base = spec.model_dump(mode="json", exclude={"tune"})
    base["callbacks"] = [c.model_dump(mode="json") for c in spec.callbacks]
    for key, param in spec.tune.space.items():
        where = f"tune.space.{key}"
        for value in param.candidates():
            try:
                Spec.model_validate(apply_overrides(base, [(key, value)]))
            except ValidationError as e:
                inner = _to_spec_error(e, None)
                if "unknown key" in inner.detail or "not a mapping" in inner.detail:
                    raise ValueError(f"{where}: not a spec key ({inner})") from None
                raise ValueError(f"{where}: value {value!r} makes an invalid spec: {inner}") from None
            except SpecError as e:
                if "not a mapping" in e.detail or "expected an index" in e.detail:
                    raise ValueError(f"{where}: not a spec key ({e.detail})") from None
                raise ValueError(f"{where}: value {value!r} makes an invalid spec: {e}") from None
