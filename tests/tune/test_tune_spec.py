"""The ``tune:`` spec section and ``unified tune``'s bad-input answers (no training here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from unified.cli import main
from unified.errors import SpecError
from unified.spec import Spec, load_spec, tune_metric

BASE = {"data": {"source": "sklearn:iris"},
        "tune": {"space": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}}}


def _err(changes: dict) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(BASE, changes)
    return str(e.value)


def test_tune_section_round_trips_and_defaults() -> None:
    space = {**BASE["tune"]["space"], "model.hidden": {"type": "categorical", "choices": [[8], [32, 16]]},
             "trainer.max_epochs": {"type": "int", "low": 1, "high": 5}}
    spec = load_spec(BASE, {"tune.space": space})
    assert Spec.from_yaml(spec.to_yaml()) == spec
    t = spec.tune
    assert (t.n_trials, t.pruner, t.sampler, t.storage, t.metric, t.direction) == (20, "median", "tpe", None, None, None)
    assert tune_metric(spec) == ("val/loss", "minimize")
    assert load_spec(spec, {"tune": None}).tune is None


@pytest.mark.parametrize("callbacks, tune, expected", [
    ([], {}, ("val/loss", "minimize")),
    ([{"model_checkpoint": {"monitor": "val/accuracy", "mode": "max"}}], {}, ("val/accuracy", "maximize")),
    ([{"early_stopping": {"monitor": "val/f1_macro", "mode": "max"}}], {}, ("val/f1_macro", "maximize")),
    ([], {"metric": "val/accuracy"}, ("val/accuracy", "maximize")),
    ([], {"metric": "train/loss_epoch"}, ("train/loss_epoch", "minimize")),
    ([], {"metric": "val/accuracy", "direction": "minimize"}, ("val/accuracy", "minimize")),
])
def test_metric_and_direction_defaults(callbacks, tune, expected) -> None:
    assert tune_metric(load_spec(BASE, {"callbacks": callbacks, **{f"tune.{k}": v for k, v in tune.items()}})) == expected


@pytest.mark.parametrize("changes, path, words", [
    ({"tune.space": {"optimizer.lrr": {"type": "float", "low": 1e-4, "high": 0.1}}},
     "tune.space.optimizer.lrr", ["not a spec key", "did you mean 'lr'"]),
    ({"tune.space": {"foo.bar": {"type": "int", "low": 1, "high": 3}}}, "tune.space.foo.bar", ["not a spec key"]),
    ({"tune.space": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
     "tune.space.optimizer.lr", ["low must be < high", "low=0.1", "high=0.01"]),
    ({"tune.space": {"optimizer.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "tune.space.optimizer.lr", ["log: true needs low > 0"]),
    ({"tune.space": {"optimizer.lr": {"type": "float", "low": -1, "high": 0.1}}},
     "tune.space.optimizer.lr", ["value -1.0 makes an invalid spec", "optimizer.lr: must be > 0"]),
    ({"tune.space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True, "step": 0.01}}},
     "tune.space.optimizer.lr", ["'log' or 'step', not both"]),
    ({"tune.space": {"optimizer.name": {"type": "categorical", "choices": []}}},
     "tune.space.optimizer.name", ["non-empty 'choices'"]),
    ({"tune.space": {"optimizer.name": {"type": "categorical", "choices": ["adam", "sgdd"]}}},
     "tune.space.optimizer.name", ["'sgdd'", "did you mean 'sgd'"]),
    ({"tune.space": {"optimizer.name": {"type": "categorical", "choices": ["sgd"], "low": 1}}},
     "tune.space.optimizer.name", ["not categorical"]),
    ({"tune.space": {"trainer.max_epochs": {"type": "int", "low": 1.5, "high": 3}}},
     "tune.space.trainer.max_epochs", ["whole number"]),
    ({"tune.space": {"trainer.max_epochs": {"type": "int", "low": 1}}}, "tune.space.trainer.max_epochs",
     ["needs 'low' and 'high'"]),
    ({"tune.space": {"optimizer.lr": {"type": "flot", "low": 1e-4, "high": 0.1}}},
     "tune.space.optimizer.lr.type", ["did you mean 'float'"]),
    ({"tune.space": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "hihg": 1}}},
     "tune.space.optimizer.lr", ["unknown key 'hihg'", "did you mean 'high'"]),
    ({"tune.space": {"logging.dir": {"type": "categorical", "choices": ["a"]}}}, "tune.space.logging.dir",
     ["cannot be tuned"]),
    ({"tune.space": {}}, "tune.space", ["at least one entry"]),
    ({"tune.metric": "val/acc"}, "tune.metric", ["not a logged key", "did you mean 'val/accuracy'"]),
    ({"tune.direction": "max"}, "tune.direction", ["minimize, maximize"]),
    ({"tune.pruner": "medain"}, "tune.pruner", ["did you mean 'median'"]),
    ({"tune.sampler": "grid"}, "tune.sampler", ["tpe, random"]),
    ({"tune.n_trials": 0}, "tune.n_trials", ["must be > 0"]),
    ({"tune.enqueue": [{"optimizer.lr": 5}]}, "tune.enqueue[0].optimizer.lr", ["expected a number in [0.0001, 0.1]"]),
    ({"tune.enqueue": [{"optimizer.l": 0.01}]}, "tune.enqueue[0].optimizer.l", ["did you mean 'optimizer.lr'"]),
    ({"tune.study_name": "a b"}, "tune.study_name", ["names a folder"]),
])
def test_bad_tune_sections_name_the_field(changes: dict, path: str, words: list[str]) -> None:
    msg = _err(changes)
    assert msg.startswith(f"{path}: "), msg
    for w in words:
        assert w in msg, msg


def _write(tmp_path: Path, spec: dict) -> str:
    spec = {**spec, "logging": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("spec_changes, args, words", [
    ({"tune": None}, [], ["tune: the spec has no tune section"]),
    ({"tune": {"space": {"optimizer.lrr": {"type": "float", "low": 0.1, "high": 1}}}}, [],
     ["s.yaml: tune.space.optimizer.lrr: not a spec key"]),
    ({}, ["--workers", "0"], ["--workers: expected an integer >= 1, got 0"]),
    ({}, ["--n-trials", "0"], ["--n-trials: expected an integer > 0, got 0"]),
    ({}, ["--study-name", "a/b"], ["--study-name: expected letters"]),
    ({}, ["--storage", "nowhere"], ["--storage: expected a database URL"]),
    pytest.param({}, ["--storage", "mysql://u:secret@127.0.0.1:1/x"], ["--storage mysql://u:***@127.0.0.1:1/x"],
                 marks=pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="needs optuna")),
    ({}, ["--backend", "ignit"], ["did you mean 'ignite'"]),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, spec_changes, args, words) -> None:
    path = _write(tmp_path, {**BASE, **spec_changes})
    code = main(["tune", path, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("unified: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert "secret" not in err


def test_cli_val_metric_without_a_validation_split_exits_2(tmp_path, capsys, torch_backend) -> None:
    path = _write(tmp_path, {**BASE, "data": {"source": "sklearn:iris", "val_fraction": 0.0}})
    assert main(["tune", path, "--backend", torch_backend, "--n-trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "tune.metric: 'val/loss' is only logged with a validation split" in err, err


def test_cli_data_errors_stop_before_any_trial(tmp_path, capsys, torch_backend) -> None:
    path = _write(tmp_path, {**BASE, "data": {"source": "csv:missing.csv"}})
    assert main(["tune", path, "--backend", torch_backend, "--n-trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "data.source" in err and "missing.csv" in err
    assert not (tmp_path / "runs" / "experiment" / torch_backend).exists()  # no trial ran
