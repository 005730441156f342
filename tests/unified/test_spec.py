"""unified.spec: defaults and resolution, YAML/TOML loading and round-trips, --set overrides, monitors.

Needs no training backend: everything here is pydantic + YAML + TOML.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from unified.errors import SpecError
from unified.spec import (
    DataSpec,
    OptimizerSpec,
    Spec,
    apply_overrides,
    check_monitors,
    load_spec,
    logged_keys,
    parse_overrides,
)

IRIS = {"source": "sklearn:iris"}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.yaml"


def spec_of(**fields) -> Spec:
    return Spec.from_dict({"data": dict(IRIS), **fields})


def assert_one_line(msg: str, *parts: str) -> None:
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


# -- defaults and resolution ----------------------------------------------------------------------------

def test_defaults_match_the_contract():
    s = Spec(data=DataSpec(source="sklearn:digits"))
    assert (s.name, s.seed, s.backend, s.keras_backend, s.task) == ("experiment", 0, None, None, "classification")
    assert s.data.val_fraction == 0.2 and s.data.test_fraction == 0.0
    assert s.data.batch_size == 32 and s.data.shuffle is True and s.data.standardize is False
    assert s.model.arch == "mlp" and s.model.factory is None and s.model.hidden == [128]
    assert s.model.activation == "relu" and s.model.dropout == 0.0
    assert s.loss is None and s.metrics is None and s.scheduler is None and s.callbacks == []
    assert (s.optimizer.name, s.optimizer.lr, s.optimizer.resolved_weight_decay) == ("adam", 1e-3, 0.0)
    t = s.trainer
    assert (t.max_epochs, t.max_steps, t.precision, t.accumulate_grad_batches) == (10, None, "32", 1)
    assert (t.gradient_clip_norm, t.devices, t.strategy, t.deterministic) == (None, 1, "auto", True)
    assert (t.log_every_n_steps, t.progress_bar) == (10, True)
    assert s.logging.dir == "runs" and s.logging.loggers == ["csv"]
    assert s.export.formats == [] and s.export.verify is True


@pytest.mark.parametrize(
    "task, source, loss, metrics",
    [
        ("classification", "sklearn:digits", "cross_entropy", ["accuracy", "f1_macro"]),
        ("binary", "sklearn:breast_cancer", "bce_with_logits", ["accuracy", "f1_macro", "auroc"]),
        ("regression", "sklearn:diabetes", "mse", ["mse", "mae", "r2"]),
    ],
)
def test_loss_and_metrics_resolve_from_task(task, source, loss, metrics):
    s = Spec.from_dict({"task": task, "data": {"source": source}})
    assert s.loss is None and s.metrics is None  # unset stays unset ...
    assert s.resolved_loss() == loss and s.resolved_metrics() == metrics  # ... and resolves per task
    assert s.metric_names() == metrics
    r = s.resolved(backend="ignite")
    assert r.loss == loss and r.metrics == metrics and r.backend == "ignite"
    assert s.backend is None  # resolved() is a copy


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_explicit_loss_is_kept(loss):
    s = Spec.from_dict({"task": "regression", "data": {"source": "sklearn:diabetes"}, "loss": loss})
    assert s.resolved_loss() == loss and s.resolved().loss == loss


def test_explicit_metrics_are_kept_in_order():
    s = spec_of(metrics=["f1_macro", "accuracy", "recall_macro"])
    assert s.resolved_metrics() == ["f1_macro", "accuracy", "recall_macro"]
    assert s.metric_names() == ["f1_macro", "accuracy", "recall_macro"]


def test_metric_names_include_user_metrics_only_when_named():
    s = spec_of(metrics=["accuracy", {"python": {"target": "mypkg.metrics:TopTwo"}}])
    assert s.metric_names() == ["accuracy"]
    assert s.metric_names({1: "top2"}) == ["accuracy", "top2"]


@pytest.mark.parametrize(
    "optimizer, weight_decay",
    [
        ({"name": "adamw"}, 0.01),  # PyTorch's AdamW default
        ({"name": "adam"}, 0.0),
        ({"name": "sgd"}, 0.0),
        ({"name": "rmsprop"}, 0.0),
        ({"name": "adamw", "weight_decay": 0.0}, 0.0),  # an explicit 0 is not replaced by the default
        ({"name": "adamw", "weight_decay": 0.2}, 0.2),
        ({"name": "sgd", "weight_decay": 1e-4}, 1e-4),
    ],
)
def test_weight_decay_default_depends_on_optimizer(optimizer, weight_decay):
    s = spec_of(optimizer=optimizer)
    assert s.optimizer.resolved_weight_decay == weight_decay
    assert Spec.from_yaml(s.to_yaml()).optimizer.resolved_weight_decay == weight_decay
    assert OptimizerSpec(**optimizer).resolved_weight_decay == weight_decay


def test_adamw_default_applies_after_set_override(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("data: {source: 'sklearn:iris'}\noptimizer: {name: adam, lr: 0.01}\n")
    assert load_spec(path).optimizer.resolved_weight_decay == 0.0
    assert load_spec(path, ["optimizer.name=adamw"]).optimizer.resolved_weight_decay == 0.01


def test_adamw_default_applies_after_override_of_a_spec_object():
    spec = spec_of(optimizer={"name": "adam"})
    assert load_spec(spec, {"optimizer.name": "adamw"}).optimizer.resolved_weight_decay == 0.01


@pytest.mark.parametrize(
    "alias, canonical",
    [("32", "32"), ("32-true", "32"), ("fp32", "32"), (32, "32"), ("bf16", "bf16-mixed"),
     ("BF16-Mixed", "bf16-mixed"), ("16", "16-mixed"), ("fp16", "16-mixed"), (16, "16-mixed")],
)
def test_precision_aliases(alias, canonical):
    assert spec_of(trainer={"precision": alias}).trainer.precision == canonical


def test_logging_always_has_csv_first_without_duplicates():
    s = spec_of(logging={"loggers": ["tensorboard", "csv", "mlflow", "tensorboard"]})
    assert s.logging.loggers == ["csv", "tensorboard", "mlflow"]


def test_callback_shorthands():
    s = spec_of(callbacks=["lr_monitor", {"terminate_on_nan": None}, {"early_stopping": {"patience": 1}}])
    assert [c.kind for c in s.callbacks] == ["lr_monitor", "terminate_on_nan", "early_stopping"]
    assert s.callbacks[2].config.patience == 1 and s.callbacks[2].config.monitor == "val/loss"


def test_factory_replaces_the_default_arch():
    s = spec_of(model={"factory": "mypkg.models:build", "kwargs": {"width": 8}})
    assert s.model.arch is None and s.model.factory == "mypkg.models:build" and s.model.kwargs == {"width": 8}


# -- YAML round-trip -----------------------------------------------------------------------------------

FULL = {
    "name": "reg-full",
    "seed": 7,
    "task": "regression",
    "data": {"source": "sklearn:diabetes", "standardize": True, "val_fraction": 0.25, "test_fraction": 0.1,
             "batch_size": 16, "shuffle": False},
    "model": {"arch": "mlp", "hidden": [64, 32], "activation": "tanh", "dropout": 0.1},
    "loss": "huber",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "scheduler": {"name": "reduce_on_plateau", "monitor": "val/mae", "factor": 0.5, "patience": 2},
    "trainer": {"max_epochs": 3, "max_steps": 50, "precision": "bf16", "accumulate_grad_batches": 2,
                "gradient_clip_norm": 1.0, "log_every_n_steps": 5, "progress_bar": False},
    "metrics": ["mae", {"python": {"target": "mypkg.metrics:Rmse", "kwargs": {"squared": False}}}],
    "callbacks": [
        {"early_stopping": {"monitor": "val/loss", "patience": 5, "min_delta": 0.001}},
        {"model_checkpoint": {"monitor": "val/mae", "mode": "min", "save_top_k": 2, "save_last": False}},
        "lr_monitor",
        {"terminate_on_nan": {}},
        {"timer": {"max_time": 60}},
        {"python": {"target": "mypkg.callbacks:Notify", "kwargs": {"to": ["a", "b"], "n": 1}}},
    ],
    "logging": {"dir": "out", "loggers": ["csv", "tensorboard", "mlflow"],
                "mlflow": {"tracking_uri": "file:./mlruns", "experiment": "e1"}},
    "export": {"formats": ["onnx", "torchscript"], "verify": False},
}

ROUND_TRIP = {
    "minimal": {"data": {"source": "sklearn:iris"}},
    "full": FULL,
    "binary-factory-adamw": {
        "task": "binary", "data": {"source": "sklearn:breast_cancer"}, "keras_backend": "jax",
        "model": {"factory": "mypkg.models:build", "kwargs": {"depth": 2, "dims": [4, 4]}},
        "optimizer": {"name": "adamw", "betas": [0.8, 0.99]},
        "metrics": ["auroc", {"python": {"target": "mypkg.m:F2"}}],
    },
    "csv-scheduler-step": {
        "backend": "lightning",
        "data": {"source": "csv:data/train.csv", "target": "label", "features": ["a", "b"]},
        "scheduler": {"name": "onecycle", "interval": "step", "max_lr": 0.1},
        "callbacks": [{"early_stopping": {"monitor": "val/accuracy", "mode": "max"}}],
    },
}


@pytest.mark.parametrize("data", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_yaml_round_trip(data):
    spec = Spec.from_dict(copy.deepcopy(data))
    text = spec.to_yaml()
    again = Spec.from_yaml(text)
    assert again == spec
    assert again.to_yaml() == text  # stable: a second trip changes nothing
    assert again.resolved() == spec.resolved()
    assert Spec.from_yaml(spec.resolved().to_yaml()) == spec.resolved()


def test_round_trip_keeps_callbacks_and_user_metrics():
    spec = Spec.from_yaml(Spec.from_dict(copy.deepcopy(FULL)).to_yaml())
    assert [c.kind for c in spec.callbacks] == [
        "early_stopping", "model_checkpoint", "lr_monitor", "terminate_on_nan", "timer", "python"]
    assert spec.callbacks[5].python.kwargs == {"to": ["a", "b"], "n": 1}
    assert spec.callbacks[1].model_checkpoint.save_top_k == 2
    user = spec.metrics[1]
    assert user.python.target == "mypkg.metrics:Rmse" and user.python.kwargs == {"squared": False}
    assert spec.trainer.precision == "bf16-mixed"
    # each callback is written as a one-key mapping, never with the other kinds as nulls
    dumped = spec.to_dict()["callbacks"]
    assert [list(c) for c in dumped] == [[c.kind] for c in spec.callbacks]


def test_example_spec_round_trips():
    spec = load_spec(EXAMPLE)
    assert spec.name == "digits-mlp" and len(spec.callbacks) == 2
    assert Spec.from_yaml(spec.to_yaml()) == spec


def test_save_writes_yaml_that_loads_back(tmp_path):
    spec = Spec.from_dict(copy.deepcopy(FULL)).resolved(backend="ignite")
    path = tmp_path / "deep" / "spec.yaml"
    spec.save(path)
    assert load_spec(path) == spec
    assert not [p for p in path.parent.iterdir() if p.name != "spec.yaml"]  # no temp file left behind


def test_load_spec_accepts_a_spec_a_dict_and_paths(tmp_path):
    spec = Spec.from_dict(copy.deepcopy(FULL))
    path = tmp_path / "s.yml"
    path.write_text(spec.to_yaml())
    assert load_spec(spec) == spec
    assert load_spec(spec.to_dict()) == spec
    assert load_spec(path) == spec and load_spec(str(path)) == spec


# -- TOML ----------------------------------------------------------------------------------------------

TOML_TEXT = """\
name = "digits-toml"
seed = 3
task = "classification"
metrics = ["accuracy", "f1_macro"]

[data]
source = "sklearn:digits"
standardize = true
batch_size = 64

[model]
arch = "mlp"
hidden = [64, 32]

[optimizer]
name = "adamw"
lr = 0.002

[trainer]
max_epochs = 4
precision = "32"

[[callbacks]]
early_stopping = { monitor = "val/loss", patience = 2 }

[[callbacks]]
model_checkpoint = { monitor = "val/accuracy", mode = "max" }
"""

TOML_AS_YAML = """\
name: digits-toml
seed: 3
task: classification
metrics: [accuracy, f1_macro]
data: {source: 'sklearn:digits', standardize: true, batch_size: 64}
model: {arch: mlp, hidden: [64, 32]}
optimizer: {name: adamw, lr: 0.002}
trainer: {max_epochs: 4, precision: '32'}
callbacks:
  - early_stopping: {monitor: val/loss, patience: 2}
  - model_checkpoint: {monitor: val/accuracy, mode: max}
"""


def test_toml_loads_like_the_same_yaml(tmp_path):
    toml_path = tmp_path / "spec.toml"
    toml_path.write_text(TOML_TEXT)
    spec = load_spec(toml_path)
    assert spec == Spec.from_yaml(TOML_AS_YAML)
    assert spec.optimizer.resolved_weight_decay == 0.01
    assert [c.kind for c in spec.callbacks] == ["early_stopping", "model_checkpoint"]
    assert Spec.from_yaml(spec.to_yaml()) == spec


def test_toml_with_overrides_and_upper_case_suffix(tmp_path):
    path = tmp_path / "SPEC.TOML"
    path.write_text(TOML_TEXT)
    spec = load_spec(path, ["trainer.max_epochs=9", "callbacks.0.early_stopping.patience=7"])
    assert spec.trainer.max_epochs == 9 and spec.callbacks[0].early_stopping.patience == 7


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[data\nsource = 1\n')
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert_one_line(str(e.value), str(path), "invalid TOML")


def test_toml_field_errors_name_the_file_and_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nsource = "sklearn:iris"\n[optimizer]\nlr = -1.0\n')
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert_one_line(str(e.value), str(path), "optimizer.lr", "> 0")
    assert e.value.path == "optimizer.lr" and e.value.source == str(path)


# -- file-level problems -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "content, expected",
    [
        ("", ["empty", "mapping"]),
        ("   \n\n", ["empty"]),
        ("# only a comment\n", ["no settings", "mapping"]),
        ("- a\n- b\n", ["mapping", "list"]),
        ("just a string\n", ["mapping", "str"]),
        ("data: {source: x\n", ["invalid YAML", "line 2"]),
        (b"data: \xff\xfe\n", ["UTF-8"]),
    ],
    ids=["empty", "blank", "comment", "list", "scalar", "bad-yaml", "not-utf8"],
)
def test_file_level_errors_name_the_file(tmp_path, content, expected):
    path = tmp_path / "s.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert_one_line(str(e.value), str(path), *expected)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "nope.yaml")
    assert_one_line(str(e.value), "nope.yaml", "not found")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path)
    assert_one_line(str(e.value), str(tmp_path), "directory")


def test_from_yaml_source_is_named_and_error_is_a_value_error():
    with pytest.raises(ValueError) as e:  # SpecError subclasses ValueError
        Spec.from_yaml("data: {source: 'sklearn:iris'}\noptimizer: {lr: 0}\n", source="my.yaml")
    assert isinstance(e.value, SpecError)
    assert str(e.value) == "my.yaml: optimizer.lr: must be > 0.0, got 0"


# -- --set overrides -----------------------------------------------------------------------------------

BASE = {
    "data": {"source": "sklearn:iris"},
    "callbacks": [{"early_stopping": {"patience": 3}}, {"model_checkpoint": {"monitor": "val/accuracy", "mode": "max"}}],
}


def test_override_scalars():
    s = load_spec(BASE, ["trainer.max_epochs=5", "optimizer.lr=0.01", "data.standardize=true", "name=run-2",
                         "trainer.precision=bf16", "seed=42", "optimizer.lr=1e-2", "data.val_fraction=0.3"])
    assert (s.trainer.max_epochs, s.optimizer.lr, s.data.standardize) == (5, 0.01, True)
    assert (s.name, s.trainer.precision, s.seed, s.data.val_fraction) == ("run-2", "bf16-mixed", 42, 0.3)


def test_override_lists_and_mappings():
    s = load_spec(BASE, ["model.hidden=[64, 32]", "metrics=[accuracy, recall_macro]",
                         "logging.loggers=[tensorboard]", "optimizer={name: sgd, lr: 0.5, momentum: 0.9}",
                         "data.kwargs={a: 1}"])
    assert s.model.hidden == [64, 32] and s.metrics == ["accuracy", "recall_macro"]
    assert s.logging.loggers == ["csv", "tensorboard"]
    assert (s.optimizer.name, s.optimizer.lr, s.optimizer.momentum) == ("sgd", 0.5, 0.9)
    assert s.data.kwargs == {"a": 1}


def test_override_nested_and_list_index():
    s = load_spec(BASE, ["callbacks.0.early_stopping.patience=5", "callbacks.1.model_checkpoint.save_top_k=3",
                         "logging.mlflow.experiment=exp-1"])
    assert s.callbacks[0].early_stopping.patience == 5
    assert s.callbacks[1].model_checkpoint.save_top_k == 3
    assert s.logging.mlflow.experiment == "exp-1"
    assert BASE["callbacks"][0] == {"early_stopping": {"patience": 3}}  # the input is not mutated


def test_override_replaces_a_whole_list_item():
    s = load_spec(BASE, ["callbacks.1=lr_monitor"])
    assert [c.kind for c in s.callbacks] == ["early_stopping", "lr_monitor"]


def test_override_creates_a_missing_section():
    s = load_spec(BASE, ["scheduler.name=cosine", "scheduler.t_max=20"])
    assert s.scheduler is not None and (s.scheduler.name, s.scheduler.t_max) == ("cosine", 20)
    # also when the section is present but null, as in a dumped spec
    dumped = Spec.from_dict(BASE).to_dict()
    assert dumped["scheduler"] is None
    assert load_spec(dumped, ["scheduler.name=step"]).scheduler.name == "step"
    assert apply_overrides({"a": 1}, [("b.c.d", 2)]) == {"a": 1, "b": {"c": {"d": 2}}}


def test_override_dict_form_and_spec_source():
    spec = Spec.from_dict(BASE)
    s = load_spec(spec, {"trainer.max_epochs": 7, "model.hidden": [8]})
    assert s.trainer.max_epochs == 7 and s.model.hidden == [8]
    assert spec.trainer.max_epochs == 10  # the source spec is untouched


def test_override_empty_value_is_null():
    s = load_spec(BASE, ["trainer.max_steps=100"])
    assert s.trainer.max_steps == 100
    assert load_spec(s, ["trainer.max_steps="]).trainer.max_steps is None


@pytest.mark.parametrize(
    "item, expected",
    [
        ("a=1", ("a", 1)),
        ("a.b=[1, 2]", ("a.b", [1, 2])),
        ("a=true", ("a", True)),
        ("a='5'", ("a", "5")),
        ("a=x=y", ("a", "x=y")),
        (" a =0.5", ("a", 0.5)),
        ("a={", ("a", "{")),  # not YAML: kept as the raw string
        ("a=", ("a", None)),
    ],
)
def test_parse_overrides_values_are_yaml(item, expected):
    assert parse_overrides([item]) == [expected]


@pytest.mark.parametrize("item", ["trainer.max_epochs", "=3", ""])
def test_override_without_key_value_is_rejected(item):
    with pytest.raises(SpecError) as e:
        load_spec(BASE, [item])
    assert_one_line(str(e.value), "--set", "key=value")


@pytest.mark.parametrize("index", ["5", "2", "x", "-1"])
def test_override_bad_list_index(index):
    with pytest.raises(SpecError) as e:
        load_spec(BASE, [f"callbacks.{index}.early_stopping.patience=5"])
    assert_one_line(str(e.value), f"callbacks.{index}", "index below 2")


def test_override_into_a_scalar_is_rejected():
    with pytest.raises(SpecError) as e:
        load_spec(BASE, ["data.source.x=1"])
    assert_one_line(str(e.value), "data.source.x", "data.source is not a mapping")


@pytest.mark.parametrize(
    "item, expected",
    [
        ("trainer.max_epochs=ten", ["trainer.max_epochs", "integer", "'ten'"]),
        ("optimizer.lr=-1", ["optimizer.lr", "> 0"]),
        ("optimizer.lrr=0.1", ["optimizer", "'lrr'", "did you mean 'lr'"]),
        ("optimzer.lr=0.1", ["'optimzer'", "did you mean 'optimizer'"]),
        ("callbacks.0.early_stopping.patiense=1", ["callbacks[0].early_stopping", "did you mean 'patience'"]),
    ],
)
def test_override_values_are_validated_and_name_the_file(tmp_path, item, expected):
    path = tmp_path / "s.yaml"
    path.write_text(Spec.from_dict(BASE).to_yaml())
    with pytest.raises(SpecError) as e:
        load_spec(path, [item])
    assert_one_line(str(e.value), str(path), *expected)


# -- keyword-only construction -------------------------------------------------------------------------

def test_keyword_construction_equals_loading():
    built = Spec(
        name="kw", task="binary", data=DataSpec(source="sklearn:breast_cancer", batch_size=8),
        optimizer=OptimizerSpec(name="adamw", lr=0.01), callbacks=[{"early_stopping": {"patience": 2}}],
    )
    loaded = Spec.from_yaml(
        "name: kw\ntask: binary\ndata: {source: 'sklearn:breast_cancer', batch_size: 8}\n"
        "optimizer: {name: adamw, lr: 0.01}\ncallbacks: [{early_stopping: {patience: 2}}]\n"
    )
    assert built == loaded and built.optimizer.resolved_weight_decay == 0.01
    assert Spec(data={"source": "sklearn:iris"}) == Spec.from_dict({"data": {"source": "sklearn:iris"}})


@pytest.mark.parametrize(
    "build",
    [lambda: Spec({"data": IRIS}), lambda: DataSpec("sklearn:iris"), lambda: OptimizerSpec("sgd")],
    ids=["Spec", "DataSpec", "OptimizerSpec"],
)
def test_positional_arguments_are_rejected(build):
    with pytest.raises(TypeError):
        build()


def test_keyword_construction_validates():
    with pytest.raises(ValueError):
        Spec(data=IRIS, optimizer={"lr": -1})
    with pytest.raises(ValueError):
        Spec(data=IRIS, optimzer={})
    assert Spec().data.source is None  # data may come from UnifiedTrainer.fit(data=...) instead
    s = Spec(data=IRIS)
    with pytest.raises(ValueError):
        s.optimizer.lr = -1  # validate_assignment
    s.optimizer.lr = 0.5
    assert s.optimizer.lr == 0.5


def test_keyword_construction_errors_are_spec_errors_with_a_suggestion():
    with pytest.raises(SpecError) as e:
        Spec(data=IRIS, optimzer={})
    assert_one_line(str(e.value), "'optimzer'", "did you mean 'optimizer'")


# -- monitors -----------------------------------------------------------------------------------------

def test_logged_keys():
    s = spec_of()
    assert logged_keys(s, ["accuracy", "f1_macro"]) == [
        "train/loss", "train/loss_epoch", "lr", "val/loss", "val/accuracy", "val/f1_macro"]


def test_check_monitors_accepts_logged_keys():
    s = spec_of(
        metrics=["accuracy"],
        callbacks=[{"early_stopping": {"monitor": "val/accuracy", "mode": "max"}},
                   {"model_checkpoint": {"monitor": "train/loss"}}, "lr_monitor",
                   {"python": {"target": "pkg.cb:CB"}}],
        scheduler={"name": "reduce_on_plateau", "monitor": "val/loss"},
    )
    check_monitors(s, s.metric_names())  # no error


@pytest.mark.parametrize(
    "fields, path, suggestion",
    [
        ({"callbacks": [{"early_stopping": {"monitor": "val/acc"}}]},
         "callbacks[0].early_stopping.monitor", "val/accuracy"),
        ({"callbacks": ["lr_monitor", {"model_checkpoint": {"monitor": "val_loss"}}]},
         "callbacks[1].model_checkpoint.monitor", "val/loss"),
        ({"scheduler": {"name": "reduce_on_plateau", "monitor": "val/los"}}, "scheduler.monitor", "val/loss"),
        ({"task": "regression", "data": {"source": "sklearn:diabetes"},
          "callbacks": [{"early_stopping": {"monitor": "val/r_2"}}]},
         "callbacks[0].early_stopping.monitor", "val/r2"),
    ],
    ids=["early-stopping", "checkpoint", "plateau", "regression"],
)
def test_unlogged_monitor_is_rejected_with_a_suggestion(fields, path, suggestion):
    with pytest.raises(SpecError) as e:
        Spec.from_dict({"data": dict(IRIS), **fields}, source="m.yaml")
    assert_one_line(str(e.value), "m.yaml", path, "not a logged key", f"did you mean '{suggestion}'")
    assert e.value.path == path


def test_scheduler_monitor_only_checked_for_plateau():
    s = spec_of(scheduler={"name": "step", "monitor": "nonsense"})
    check_monitors(s, s.metric_names())


def test_monitor_of_user_metric_is_checked_once_names_are_known():
    s = spec_of(metrics=["accuracy", {"python": {"target": "mypkg.m:TopTwo"}}],
                callbacks=[{"model_checkpoint": {"monitor": "val/top2", "mode": "max"}}])
    check_monitors(s, s.metric_names({1: "top2"}))
    with pytest.raises(SpecError) as e:
        check_monitors(s, s.metric_names({1: "top_2"}))
    assert_one_line(str(e.value), "callbacks[0].model_checkpoint.monitor", "'val/top2'", "not a logged key",
                    "did you mean 'val/top_2'")


def test_max_steps_alone_is_enough():
    s = load_spec({"data": {"source": "sklearn:iris"}, "trainer": {"max_epochs": None, "max_steps": 7}})
    assert s.trainer.max_epochs is None and s.trainer.max_steps == 7


def test_unknown_backend_suggests_the_close_one():
    from unified.registry import get_entry

    with pytest.raises(SpecError, match="did you mean 'lightning'"):
        get_entry("lightnin")
