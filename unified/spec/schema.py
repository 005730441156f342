"""The experiment spec's pydantic v2 models: keyword-only, validated on construction, unknown keys refused."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator,
                      model_validator)

from unified.archs import ARCHS
from unified.spec.messages import _choice_msg, _to_spec_error
from unified.spec.names import (
    BUILTIN_METRICS, DATA_SCHEMES, DEFAULT_LOSS, DEFAULT_METRICS, KERAS_TENSOR_BACKENDS, LOSSES, LOSSES_FOR_TASK,
    METRICS_FOR_TASK, PRECISION_ALIASES, SKLEARN_DATASETS, TARGET_RE, TASKS,
)
from unified.spec.rules import check_monitors, check_tune_space


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


class ImageSpec(_Model):
    """``data.image``: how ``imagefolder:`` files are decoded (Pillow): converted, resized, scaled to [0, 1]."""

    size: Optional[list[int]] = None  # [H, W]; None: the files' own size (they must all have it)
    channels: int = 3  # 1 grayscale, 3 RGB, 4 RGBA (unified.data.images.MODES)

    @field_validator("size")
    @classmethod
    def _size(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (len(v) != 2 or any(d <= 0 for d in v)):
            raise ValueError(f"expected [H, W], two positive sizes (e.g. [32, 32]), got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int) -> int:
        if v not in (1, 3, 4):
            raise ValueError(f"expected 1 (grayscale), 3 (RGB) or 4 (RGBA), got {v}")
        return v


class AugmentSpec(_Model):
    """``data.augment``: seeded augmentation of the train split's images (docs/spec.md#augmentation)."""

    hflip: bool = False  # mirror left-right with probability 0.5
    crop_padding: int = Field(0, ge=0)  # zero-pad by this many pixels, then crop back at a random offset


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
    shape: Optional[list[int]] = None  # view each flat row as one sample of this shape, e.g. [1, 8, 8]
    image: Optional[ImageSpec] = None  # imagefolder: decode size and channels
    augment: Optional[AugmentSpec] = None  # train split, images: hflip, crop_padding
    num_workers: int = Field(0, ge=0)  # processes fetching (decoding, augmenting) upcoming batches ahead
    mmap: bool = False  # npz:/npy:: memory-map the (uncompressed) features instead of loading them

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError(f"expected a list of positive sizes, e.g. [1, 8, 8] (C, H, W) or [8, 8] (T, F), got {v}")
        return v

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

    @field_validator("image")
    @classmethod
    def _image(cls, v: Optional[ImageSpec], info: ValidationInfo) -> Optional[ImageSpec]:
        from unified.data.sources import IMAGE_SCHEMES

        scheme = (info.data.get("source") or "").partition(":")[0]
        if v is not None and scheme and scheme not in IMAGE_SCHEMES:
            raise ValueError(f"applies to {', '.join(s + ':' for s in IMAGE_SCHEMES)} sources, not {scheme}: "
                             f"(view rows as images with data.shape)")
        return v

    @field_validator("mmap")
    @classmethod
    def _mmap(cls, v: bool, info: ValidationInfo) -> bool:
        from unified.data.sources import MMAP_SCHEMES

        scheme = (info.data.get("source") or "").partition(":")[0]
        if v and scheme and scheme not in MMAP_SCHEMES:
            raise ValueError(f"memory-maps {', '.join(s + ':' for s in MMAP_SCHEMES)} sources, not {scheme}:")
        return v

    @property
    def scheme(self) -> str:
        return (self.source or "").partition(":")[0]

    @property
    def location(self) -> str:
        return (self.source or "").partition(":")[2]


class _ModelFields(_Model):
    """A built-in architecture (``arch``) or the user's own ``factory``.

    The built-in ``mlp`` takes ``hidden``, ``activation``, ``dropout``; the N-D architectures
    (``unified.archs.ARCHS``: cnn, resnet, lstm, gru, transformer) take the fields of their parameter
    dataclass, generated below (unset: the arch's default). A field of another arch is refused.
    """

    arch: Optional[Literal[("mlp", *ARCHS)]] = "mlp"  # type: ignore[valid-type]
    factory: Optional[str] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    hidden: list[int] = Field(default_factory=lambda: [128])
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "elu", "leaky_relu", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    def arch_params(self) -> dict[str, Any]:
        """The fields of ``arch``'s parameter dataclass that this spec sets (the rest take its defaults)."""
        names = ARCH_FIELDS.get(self.arch or "", ())
        return {n: getattr(self, n) for n in names if getattr(self, n, None) is not None}

    @model_validator(mode="after")
    def _fields_of_arch(self) -> "_ModelFields":
        if self.arch is None:
            return self
        own = set(ARCH_FIELDS.get(self.arch, MLP_FIELDS))
        foreign = sorted(n for n in ARCH_ONLY_FIELDS if getattr(self, n, None) is not None and n not in own)
        if foreign:
            raise ValueError(f"{foreign[0]}: not a field of arch {self.arch!r} (its fields: {', '.join(sorted(own))})")
        return self

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
    def _need_one(self) -> "_ModelFields":
        if self.arch is None and self.factory is None:
            raise ValueError(f"needs 'arch' ({' | '.join(('mlp', *ARCHS))}) or 'factory' ('<module>:<fn>')")
        return self


# The N-D architectures' fields, from their parameter dataclasses (unified.archs: the one list of archs).
MLP_FIELDS = ("hidden", "activation", "dropout")
ARCH_FIELDS: dict[str, tuple[str, ...]] = {name: tuple(f.name for f in dataclasses.fields(a.params))
                                           for name, a in ARCHS.items()}
ARCH_ONLY_FIELDS = sorted({n for names in ARCH_FIELDS.values() for n in names} - set(MLP_FIELDS))
ModelSpec = create_model(  # type: ignore[call-overload]
    "ModelSpec", __base__=_ModelFields, __module__=__name__,
    **{n: (Optional[Any], None) for n in ARCH_ONLY_FIELDS})


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
    accelerator: str = "auto"  # unified.devices.ACCELERATORS; resolved against the GPUs a backend sees
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

    @field_validator("accelerator", mode="before")
    @classmethod
    def _accelerator(cls, v: Any) -> str:
        from unified.devices import ACCELERATORS

        key = str(v).strip().lower()
        if key not in ACCELERATORS:
            raise ValueError(_choice_msg(str(v), ACCELERATORS, "unknown accelerator"))
        return key


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
        from unified.spec.loading import _validate

        return _validate(data, source)

    @classmethod
    def from_yaml(cls, text: str, *, source: Optional[str] = None) -> "Spec":
        from unified.spec.loading import _parse_yaml, _validate

        return _validate(_parse_yaml(text, source), source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the spec as YAML atomically (temp file, then rename)."""
        from unified.files import atomic_write_text

        atomic_write_text(path, self.to_yaml())
