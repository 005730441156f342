"""The experiment spec: pydantic v2 models, YAML / TOML / dict loading and ``--set`` overrides.

Every model is keyword-only, validated on construction, rejects unknown keys (with a did-you-mean
suggestion) and round-trips through YAML: ``Spec.from_yaml(spec.to_yaml()) == spec``.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from unified.errors import SpecError
from unified.losses import DEFAULT_LOSS, LOSSES, LOSSES_FOR_TASK
from unified.metrics import BUILTIN_METRICS as _BUILTIN_METRIC_CLASSES
from unified.metrics import HIGHER_IS_BETTER, metrics_for_task
from unified.registry import KERAS_TENSOR_BACKENDS

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
DATA_SCHEMES = ("sklearn", "csv", "npz", "parquet", "python")
# Name lists derived from their one home (unified.metrics, unified.losses, unified.registry).
TASKS = ("classification", "binary", "regression")
METRICS_FOR_TASK = {task: metrics_for_task(task) for task in TASKS}
CLASSIFICATION_METRICS = METRICS_FOR_TASK["classification"]
BINARY_METRICS = METRICS_FOR_TASK["binary"]
REGRESSION_METRICS = METRICS_FOR_TASK["regression"]
BUILTIN_METRICS = tuple(_BUILTIN_METRIC_CLASSES)
DEFAULT_METRICS = {
    "classification": ["accuracy", "f1_macro"],
    "binary": ["accuracy", "f1_macro", "auroc"],
    "regression": ["mse", "mae", "r2"],
}
PRECISION_ALIASES = {
    "32": "32", "32-true": "32", "fp32": "32",
    "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed",
    "16-mixed": "16-mixed", "16": "16-mixed", "fp16": "16-mixed",
}
TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise _to_spec_error(e, None, root=type(self)) from None


def _check_target(value: str, field: str) -> str:
    if not isinstance(value, str) or not TARGET_RE.match(value):
        raise ValueError(f"expected '<module>:<name>' (e.g. 'mypkg.models:build'), got {value!r}")
    return value


class PythonRef(_Model):
    """A user object named by import path: ``{target: "pkg.mod:Name", kwargs: {...}}``."""

    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        return _check_target(v, "target")


class DataSpec(_Model):
    """Where the data comes from and how it is split and batched."""

    source: Optional[str] = None  # None: the data is passed to UnifiedTrainer.fit(data=...)
    target: Optional[str] = None
    features: Optional[list[str]] = None
    x_key: str = "x"
    y_key: str = "y"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    standardize: bool = False
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(32, gt=0)
    shuffle: bool = True

    @field_validator("source")
    @classmethod
    def _source(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        scheme, sep, rest = v.partition(":")
        if not sep or scheme not in DATA_SCHEMES:
            raise ValueError(
                f"expected '<scheme>:<...>' with scheme one of {', '.join(DATA_SCHEMES)}, got {v!r}"
            )
        if not rest:
            raise ValueError(f"{scheme}: needs a name or path after the colon, got {v!r}")
        if scheme == "sklearn" and rest not in SKLEARN_DATASETS:
            raise ValueError(_choice_msg(rest, SKLEARN_DATASETS, "unknown sklearn dataset"))
        if scheme == "python" and not TARGET_RE.match(rest):
            raise ValueError(f"expected 'python:<module>:<function>', got {v!r}")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> "DataSpec":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}"
            )
        return self

    @property
    def scheme(self) -> str:
        return (self.source or "").partition(":")[0]

    @property
    def location(self) -> str:
        return (self.source or "").partition(":")[2]


class ModelSpec(_Model):
    """A built-in architecture (``arch``) or the user's own ``factory``."""

    arch: Optional[Literal["mlp", "cnn"]] = "mlp"
    factory: Optional[str] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    hidden: list[int] = Field(default_factory=lambda: [128])
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "elu", "leaky_relu", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _arch_or_factory(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("factory") is not None:
            if data.get("arch") is not None:
                raise ValueError("give either 'arch' or 'factory', not both")
            data = {**data, "arch": None}
        return data

    @field_validator("factory")
    @classmethod
    def _factory(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _check_target(v, "factory")

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        for i, width in enumerate(v):
            if width <= 0:
                raise ValueError(f"every width must be > 0, got {width} at index {i}")
        return v

    @model_validator(mode="after")
    def _need_one(self) -> "ModelSpec":
        if self.arch is None and self.factory is None:
            raise ValueError("needs 'arch' (mlp | cnn) or 'factory' ('<module>:<fn>')")
        return self


class OptimizerSpec(_Model):
    """Optimizer with PyTorch's update rules and defaults."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: Optional[float] = Field(None, ge=0.0)
    momentum: float = Field(0.0, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    alpha: float = Field(0.99, ge=0.0)

    @property
    def resolved_weight_decay(self) -> float:
        """``weight_decay``, or PyTorch's default when unset: 0.01 for AdamW, 0 for the others."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.name == "adamw" else 0.0

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        for b in v:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> "OptimizerSpec":
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs name: sgd and momentum > 0")
        if self.momentum and self.name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to sgd and rmsprop, not {self.name}")
        return self


class SchedulerSpec(_Model):
    """Learning-rate schedule with ``torch.optim.lr_scheduler``'s formulas and defaults.

    ``interval: step`` counts optimizer steps (one per accumulated update). ``warmup_steps`` (in
    ``interval`` units) puts a linear warm-up (torch ``LinearLR``) in front of ``step``, ``cosine`` and
    ``exponential`` (torch ``SequentialLR``); ``linear_warmup`` is the warm-up alone, then a constant lr.
    """

    name: Literal["step", "cosine", "exponential", "reduce_on_plateau", "onecycle", "linear_warmup"]
    interval: Literal["epoch", "step"] = "epoch"
    step_size: int = Field(10, gt=0)
    gamma: float = Field(0.1, gt=0.0)
    t_max: Optional[int] = Field(None, gt=0)
    eta_min: float = Field(0.0, ge=0.0)
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0)
    threshold: float = Field(1e-4, ge=0.0)
    cooldown: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    mode: Literal["min", "max"] = "min"
    monitor: str = "val/loss"
    max_lr: Optional[float] = Field(None, gt=0.0)
    total_steps: Optional[int] = Field(None, gt=0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    div_factor: float = Field(25.0, gt=0.0)
    final_div_factor: float = Field(1e4, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    warmup_start_factor: float = Field(1.0 / 3, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _combinations(self) -> "SchedulerSpec":
        if self.name == "reduce_on_plateau" and self.interval != "epoch":
            raise ValueError("reduce_on_plateau steps at epoch end on its monitor: interval must be 'epoch'")
        if self.name == "linear_warmup" and self.warmup_steps == 0:
            raise ValueError("linear_warmup needs warmup_steps > 0")
        if self.warmup_steps and self.name in ("onecycle", "reduce_on_plateau"):
            raise ValueError(f"warmup_steps does not combine with {self.name} (onecycle warms up by pct_start; "
                             f"use it with step, cosine, exponential or linear_warmup)")
        return self


class TrainerSpec(_Model):
    """Loop settings shared by every backend."""

    max_epochs: Optional[int] = Field(10, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    precision: str = "32"
    accumulate_grad_batches: int = Field(1, gt=0)
    gradient_clip_norm: Optional[float] = Field(None, gt=0.0)
    devices: int = Field(1, gt=0)
    num_nodes: int = Field(1, gt=0)
    strategy: Literal["auto", "ddp"] = "auto"
    deterministic: bool = True
    log_every_n_steps: int = Field(10, gt=0)
    progress_bar: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: Any) -> str:
        key = str(v).strip().lower()
        if key not in PRECISION_ALIASES:
            raise ValueError(_choice_msg(str(v), ("32", "bf16-mixed", "16-mixed"), "unknown precision"))
        return PRECISION_ALIASES[key]


class EarlyStoppingSpec(_Model):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best_weights: bool = False


class ModelCheckpointSpec(_Model):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(1, ge=-1)
    save_last: bool = True
    every_n_epochs: int = Field(1, gt=0)


class LRMonitorSpec(_Model):
    pass


class TerminateOnNanSpec(_Model):
    pass


class TimerSpec(_Model):
    max_time: float = Field(gt=0.0)  # seconds


CALLBACK_KINDS: dict[str, type[_Model]] = {
    "early_stopping": EarlyStoppingSpec,
    "model_checkpoint": ModelCheckpointSpec,
    "lr_monitor": LRMonitorSpec,
    "terminate_on_nan": TerminateOnNanSpec,
    "timer": TimerSpec,
    "python": PythonRef,
}


class _CallbackEntry(_Model):
    """One entry of ``callbacks:``, a mapping with exactly one key naming its kind (the fields: CALLBACK_KINDS)."""

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, str):  # "- lr_monitor" shorthand
            data = {data: {}}
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(
                f"each callback is a mapping with exactly one key ({', '.join(CALLBACK_KINDS)}), got {data!r}"
            )
        (key, value), = data.items()
        if key in CALLBACK_KINDS and value is None:
            data = {key: {}}
        return data

    @property
    def kind(self) -> str:
        for name in CALLBACK_KINDS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated callback without a kind")

    @property
    def config(self) -> _Model:
        return getattr(self, self.kind)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        kwargs["exclude_none"] = True
        return super().model_dump(**kwargs)


# One optional field per kind, generated from CALLBACK_KINDS (the one list of callback kinds).
CallbackSpec = create_model(  # type: ignore[call-overload]
    "CallbackSpec", __base__=_CallbackEntry, __module__=__name__,
    **{kind: (Optional[model], None) for kind, model in CALLBACK_KINDS.items()})


class MetricSpec(_Model):
    """A user metric: ``{python: {target: <module>:<Class>, kwargs: {}}}``."""

    python: PythonRef


class MlflowSpec(_Model):
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None


class LoggingSpec(_Model):
    dir: str = "runs"
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(default_factory=lambda: ["csv"])
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)

    @field_validator("loggers")
    @classmethod
    def _csv_always(cls, v: list[str]) -> list[str]:
        out = ["csv"] + [x for x in v if x != "csv"]
        return list(dict.fromkeys(out))


class ExportSpec(_Model):
    formats: list[Literal["onnx", "torchscript", "savedmodel", "keras", "tflite"]] = Field(default_factory=list)
    verify: bool = True
    tolerance: float = Field(1e-4, gt=0.0)


TUNE_PRUNERS = ("median", "hyperband", "none")
TUNE_SAMPLERS = ("tpe", "random")
# Metrics where higher is better: the default tune.direction for them is maximize.


class TuneParamSpec(_Model):
    """One dimension of ``tune.space``: a float or int range, or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = Field(None, gt=0.0)
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _check_one(self) -> "TuneParamSpec":
        if self.type == "categorical":
            if self.choices is None or len(self.choices) == 0:
                raise ValueError("type categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("low/high/log/step apply to type float and int, not categorical")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' applies to type categorical, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs 'low' and 'high'")
        if self.type == "int":
            for name in ("low", "high", "step"):
                v = getattr(self, name)
                if v is not None and float(v) != int(v):
                    raise ValueError(f"{name}: type int needs a whole number, got {v!r}")
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low!r}")
        if self.log and self.step is not None:
            raise ValueError("give 'log' or 'step', not both (Optuna cannot combine them)")
        return self

    def candidates(self) -> list[Any]:
        """Values that must each make a valid spec: the ends of a range, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class TuneSpec(_Model):
    """Hyperparameter search with Optuna (``unified tune``). See docs/spec.md#tune."""

    metric: Optional[str] = None
    direction: Optional[Literal["minimize", "maximize"]] = None
    n_trials: int = Field(20, gt=0)
    space: dict[str, TuneParamSpec]
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_epochs: int = Field(0, ge=0)
    sampler: Literal["tpe", "random"] = "tpe"
    storage: Optional[str] = None
    study_name: Optional[str] = None
    enqueue: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, TuneParamSpec]) -> dict[str, TuneParamSpec]:
        if not v:
            raise ValueError("needs at least one entry, e.g. {optimizer.lr: {type: float, low: 1e-4, high: 1e-1, log: true}}")
        for key in v:
            if key.split(".")[0] in ("tune", "name", "backend", "keras_backend", "logging"):
                raise ValueError(f"{key}: cannot be tuned (it names the study, its backend or where runs go)")
        return v

    @field_validator("study_name")
    @classmethod
    def _study_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.match(r"^[\w.\-]+$", v):
            raise ValueError(f"expected letters, digits, '.', '-' or '_' (it names a folder), got {v!r}")
        return v


class Spec(_Model):
    """The whole experiment. See ``docs/spec.md`` for every field."""

    name: str = "experiment"
    seed: int = Field(0, ge=0)
    backend: Optional[str] = None
    keras_backend: Optional[Literal[KERAS_TENSOR_BACKENDS]] = None  # type: ignore[valid-type]
    task: Literal[TASKS] = "classification"  # type: ignore[valid-type]
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: Optional[Literal[tuple(LOSSES)]] = None  # type: ignore[valid-type]
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: Optional[SchedulerSpec] = None
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    metrics: Optional[list[Union[str, MetricSpec]]] = None
    callbacks: list[CallbackSpec] = Field(default_factory=list)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    tune: Optional[TuneSpec] = None

    def __init__(self, **data: Any) -> None:
        # Keyword construction reports like file loading: one SpecError line with a suggestion.
        # (Only the top-level model overrides __init__: pydantic calls a custom __init__ for nested models.)
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _to_spec_error(e, None, root=Spec) from None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not re.match(r"^[\w.\-]+$", v):
            raise ValueError(f"expected letters, digits, '.', '-' or '_' (it names a folder), got {v!r}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        from unified.registry import available_backends

        names = sorted(available_backends())
        if v not in names:
            raise ValueError(_choice_msg(v, names, "unknown backend"))
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: Optional[list[Union[str, MetricSpec]]]) -> Optional[list[Union[str, MetricSpec]]]:
        if v is None:
            return v
        for i, m in enumerate(v):
            if isinstance(m, str) and m not in BUILTIN_METRICS:
                raise ValueError(f"[{i}]: " + _choice_msg(m, BUILTIN_METRICS, "unknown metric"))
        return v

    @model_validator(mode="after")
    def _consistency(self) -> "Spec":
        if self.loss is not None and self.loss not in LOSSES_FOR_TASK[self.task]:
            raise ValueError(
                f"loss: {self.loss!r} does not fit task {self.task!r}; expected one of "
                f"{', '.join(LOSSES_FOR_TASK[self.task])}"
            )
        allowed = METRICS_FOR_TASK[self.task]
        for i, m in enumerate(self.metrics or []):
            if isinstance(m, str) and m not in allowed:
                raise ValueError(
                    f"metrics[{i}]: {m!r} does not apply to task {self.task!r}; expected one of {', '.join(allowed)}"
                )
        if self.trainer.max_steps is None and self.trainer.max_epochs is None:
            raise ValueError("trainer: needs max_epochs or max_steps")
        # A monitor must be a key that gets logged. User metrics' names are only known once imported,
        # so with a python metric present the facade repeats this check at run time.
        if not any(isinstance(m, MetricSpec) for m in self.metrics or []):
            check_monitors(self, self.metric_names())
        if self.tune is not None:
            check_tune_space(self)
        return self

    # -- derived values -------------------------------------------------------------------------------
    def resolved_loss(self) -> str:
        return self.loss or DEFAULT_LOSS[self.task]

    def resolved_metrics(self) -> list[Union[str, MetricSpec]]:
        return list(self.metrics) if self.metrics is not None else list(DEFAULT_METRICS[self.task])

    def metric_names(self, python_names: Optional[dict[int, str]] = None) -> list[str]:
        """Names of the metrics (``val/<name>``); ``python_names`` maps index -> name for user metrics."""
        names = []
        for i, m in enumerate(self.resolved_metrics()):
            if isinstance(m, str):
                names.append(m)
            elif python_names and i in python_names:
                names.append(python_names[i])
        return names

    def resolved(self, **updates: Any) -> "Spec":
        """A copy with every default filled in (loss, metrics) and ``updates`` applied."""
        data = self.to_dict()
        data["loss"] = self.resolved_loss()
        data["optimizer"]["weight_decay"] = self.optimizer.resolved_weight_decay
        data["metrics"] = [m if isinstance(m, str) else m.model_dump(mode="json") for m in self.resolved_metrics()]
        data.update(updates)
        return Spec.from_dict(data)

    # -- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["callbacks"] = [c.model_dump(mode="json") for c in self.callbacks]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: Optional[str] = None) -> "Spec":
        return _validate(data, source)

    @classmethod
    def from_yaml(cls, text: str, *, source: Optional[str] = None) -> "Spec":
        return _validate(_parse_yaml(text, source), source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the spec as YAML atomically (temp file, then rename)."""
        from unified.files import atomic_write_text

        atomic_write_text(path, self.to_yaml())


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


# -- loading -------------------------------------------------------------------------------------------

def load_spec(
    source: Union[str, os.PathLike[str], dict[str, Any], Spec],
    overrides: Optional[Union[dict[str, Any], list[str]]] = None,
) -> Spec:
    """Load a spec from a YAML/TOML file, a dict or a Spec, applying dotted-key overrides.

    Args:
        source: path to ``.yaml``/``.yml``/``.toml``, a dict, or a ``Spec``.
        overrides: ``{"trainer.max_epochs": 5}`` or ``["trainer.max_epochs=5"]`` (values parsed as YAML).

    Raises:
        SpecError: naming the file, the field path and what was expected.
    """
    name: Optional[str] = None
    if isinstance(source, Spec):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = source
    else:
        name = str(source)
        data = read_spec_file(Path(source))
    pairs = parse_overrides(overrides, source=name)
    if pairs:
        data = apply_overrides(data, pairs, source=name)
    return _validate(data, name)


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or TOML spec file into a dict (SpecError on any problem)."""
    src = str(path)
    if not path.exists():
        raise SpecError("spec file not found", source=src)
    if path.is_dir():
        raise SpecError("expected a spec file, got a directory", source=src)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"not UTF-8 text ({e.reason} at byte {e.start})", source=src) from None
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", source=src) from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"invalid TOML: {e}", source=src) from None
    else:
        data = _parse_yaml(text, src)
    return data


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: Optional[str]) -> dict[str, Any]:
    if not text.strip():
        raise SpecError("the file is empty; expected a mapping with at least 'data: {source: ...}'", source=source)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"invalid YAML{where}: {problem}", source=source) from None
    if data is None:
        raise SpecError("the file holds no settings; expected a mapping with at least 'data: {source: ...}'",
                        source=source)
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top level, got {type(data).__name__}", source=source)
    return data


def parse_overrides(overrides: Optional[Union[dict[str, Any], list[str]]], *, source: Optional[str] = None
                    ) -> list[tuple[str, Any]]:
    """Turn ``["a.b=1", ...]`` or ``{"a.b": 1}`` into ``[("a.b", 1), ...]`` (values parsed as YAML)."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    pairs = []
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        pairs.append((key, value))
    return pairs


def apply_overrides(data: dict[str, Any], pairs: list[tuple[str, Any]], *, source: Optional[str] = None
                    ) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each dotted key set (list items by index: ``callbacks.0.x``)."""
    import copy

    out = copy.deepcopy(data)
    for key, value in pairs:
        parts = key.split(".")
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(f"--set {key}: expected an index below {len(node)}, got {part!r}", path=where,
                                    source=source)
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise SpecError(f"--set {key}: {'.'.join(parts[:depth])} is not a mapping", source=source)
    return out


# -- pydantic errors -> one readable line ---------------------------------------------------------------

def _validate(data: Any, source: Optional[str]) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top level, got {type(data).__name__}", source=source)
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise _to_spec_error(e, source) from None
    except SpecError as e:
        raise e.with_source(source) if source else e


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "MetricSpec", "function-after[_check_one]") or str(part).startswith(("function-", "tuple[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(loc: tuple[Any, ...], root: Any = None) -> list[str]:
    """Field names of the model at ``loc`` (for did-you-mean suggestions)."""
    model: Any = root or Spec
    for part in loc:
        if isinstance(part, int):
            continue
        if model is CallbackSpec and part in CALLBACK_KINDS:
            model = CALLBACK_KINDS[part]
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            break
        model = _model_of(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _to_spec_error(err: ValidationError, source: Optional[str], root: Any = None) -> SpecError:
    errors = err.errors(include_url=False)
    # A union (``str | MetricSpec``) reports one error per branch: drop the "expected a string" branch
    # when the value was a mapping, so the line names the real problem inside it.
    specific = [e for e in errors if not (e["type"] == "string_type" and e["loc"] and e["loc"][-1] == "str"
                                          and isinstance(e.get("input"), dict))]
    errors = specific or errors
    # An unknown key explains a "missing" one beside it (a typo), so report it first.
    errors.sort(key=lambda e: e["type"] == "missing")
    first = errors[0]
    loc = tuple(first["loc"])
    path = _loc_to_path(loc)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    got = first.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent_loc = loc[:-1]
        path = _loc_to_path(parent_loc)
        choices = _fields_at(parent_loc, root)
        msg = _choice_msg(key, choices, "unknown key")
        return SpecError(msg, path=path or None, source=source)
    if kind == "missing":
        msg = "required field is missing"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {bound}, got {got!r}"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        msg = _choice_msg(str(got), choices, "unexpected value")
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = f"expected an integer, got {got!r}"
    elif kind in ("float_parsing", "float_type"):
        msg = f"expected a number, got {got!r}"
    elif kind in ("bool_parsing", "bool_type"):
        msg = f"expected true or false, got {got!r}"
    elif kind in ("string_type",):
        msg = f"expected a string, got {got!r}"
    elif kind in ("list_type", "tuple_type"):
        msg = f"expected a list, got {got!r}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        msg = f"expected a mapping, got {got!r}"
    elif kind in ("too_short", "too_long"):
        msg = f"{first['msg'].lower()}, got {got!r}"
    elif kind == "value_error":
        msg = str(ctx.get("error", first["msg"]))
        # Our validators put the nested path in front: "loss: ..." / "metrics[0]: ..."
        m = re.match(r"^([\w.\[\]]+): (.*)$", msg)
        if m and (m.group(1).split(".")[0].split("[")[0] in Spec.model_fields or m.group(1).startswith("[")):
            sub, msg = m.group(1), m.group(2)
            path = f"{path}{sub}" if sub.startswith("[") else (f"{path}.{sub}" if path else sub)
    else:
        msg = f"{first['msg']}, got {got!r}"
    if len(errors) > 1 and kind not in ("literal_error",):
        others = len({_loc_to_path(tuple(e["loc"])) for e in errors[1:]} - {path})
        if others:
            msg += f" (and {others} more problem{'s' if others > 1 else ''})"
    return SpecError(msg, path=path or None, source=source)


def _choice_msg(value: str, choices: Any, what: str) -> str:
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(choices)
    return f"{what} {value!r}{hint} (expected one of: {listing})"
