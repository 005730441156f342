"""The experiment spec: pydantic v2 models, YAML / TOML / dict loading and ``--set`` overrides.

Every model is keyword-only, validated on construction, rejects unknown keys (with a did-you-mean
suggestion) and round-trips through YAML: ``Spec.from_yaml(spec.to_yaml()) == spec``.

Modules: :mod:`~unified.spec.schema` (the models), :mod:`~unified.spec.loading` (files, YAML, overrides),
:mod:`~unified.spec.rules` (monitors, the key ``best`` follows, tuning), :mod:`~unified.spec.messages`
(validation errors as one line), :mod:`~unified.spec.names` (name lists derived from their homes).
"""

from unified.spec.loading import apply_overrides, load_spec, parse_overrides, read_spec_file
from unified.spec.messages import _choice_msg, _to_spec_error
from unified.spec.names import (
    BINARY_METRICS, BUILTIN_METRICS, CLASSIFICATION_METRICS, DATA_SCHEMES, DEFAULT_LOSS, DEFAULT_METRICS,
    HIGHER_IS_BETTER, KERAS_TENSOR_BACKENDS, LOSSES, LOSSES_FOR_TASK, METRICS_FOR_TASK, PRECISION_ALIASES,
    REGRESSION_METRICS, SKLEARN_DATASETS, TARGET_RE, TASKS,
)
from unified.spec.rules import BEST_MONITOR_KINDS, best_monitor, check_monitors, check_tune_space, logged_keys, tune_metric
from unified.spec.schema import (
    CALLBACK_KINDS, TUNE_PRUNERS, TUNE_SAMPLERS, CallbackSpec, DataSpec, EarlyStoppingSpec, ExportSpec, LoggingSpec,
    LRMonitorSpec, MetricSpec, MlflowSpec, ModelCheckpointSpec, ModelSpec, OptimizerSpec, PythonRef, SchedulerSpec, Spec,
    TerminateOnNanSpec, TimerSpec, TrainerSpec, TuneParamSpec, TuneSpec,
)

__all__ = [
    "Spec", "load_spec", "read_spec_file", "parse_overrides", "apply_overrides", "best_monitor", "check_monitors",
    "check_tune_space", "logged_keys", "tune_metric", "BEST_MONITOR_KINDS", "CALLBACK_KINDS", "CallbackSpec",
    "DataSpec", "EarlyStoppingSpec", "ExportSpec", "LoggingSpec", "LRMonitorSpec", "MetricSpec", "MlflowSpec",
    "ModelCheckpointSpec", "ModelSpec", "OptimizerSpec", "PythonRef", "SchedulerSpec", "TerminateOnNanSpec",
    "TimerSpec", "TrainerSpec", "TuneParamSpec", "TuneSpec", "TUNE_PRUNERS", "TUNE_SAMPLERS",
    "BINARY_METRICS", "BUILTIN_METRICS", "CLASSIFICATION_METRICS", "DATA_SCHEMES", "DEFAULT_LOSS",
    "DEFAULT_METRICS", "HIGHER_IS_BETTER", "KERAS_TENSOR_BACKENDS", "LOSSES", "LOSSES_FOR_TASK",
    "METRICS_FOR_TASK", "PRECISION_ALIASES", "REGRESSION_METRICS", "SKLEARN_DATASETS", "TARGET_RE", "TASKS",
    "_choice_msg", "_to_spec_error",
]
