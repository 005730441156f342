"""``unified tune`` end to end: N trials in the given storage, a failing trial recorded, a best spec that runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from unified.cli import main  # noqa: E402


def test_six_trials_in_the_given_storage_and_the_best_spec_runs(tune_spec, tmp_path: Path, capsys,
                                                                 torch_backend: str) -> None:
    # Trial 0 diverges (sgd, lr 1000: NaN loss): recorded as failed, the study goes on.
    spec = tune_spec({
        "optimizer": {"name": "sgd", "lr": 0.1},
        "callbacks": [{"model_checkpoint": {"monitor": "val/accuracy", "mode": "max"}}],
        "tune": {"space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e3, "log": True},
                           "model.hidden": {"type": "categorical", "choices": [[8], [32, 16]]}},
                 "enqueue": [{"optimizer.lr": 1000.0}]},
    })
    storage = f"sqlite:///{tmp_path / 'given.db'}"
    out = tmp_path / "out"
    code = main(["tune", str(spec), "--backend", torch_backend, "--n-trials", "6", "--storage", storage, "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err

    trials = sorted(optuna.load_study(study_name="tt", storage=storage).trials, key=lambda t: t.number)
    assert [t.number for t in trials] == list(range(6))
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL" and set(states) <= {"COMPLETE", "FAIL"} and states.count("COMPLETE") >= 2, states
    assert "nan" in trials[0].user_attrs["error"].lower()
    for t in trials:  # a failure is the divergence of a large learning rate, with its reason recorded
        if t.state.name == "FAIL":
            assert t.params["optimizer.lr"] > 1.0 and t.user_attrs["error"], (t.params, t.user_attrs)
    failed = json.loads((Path(trials[0].user_attrs["run_dir"]) / "tune.json").read_text())
    assert failed["state"] == "failed" and failed["error"]

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert [r["state"] for r in rows] == [x.lower() for x in states]
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = json.loads((out / "study.json").read_text())
    assert study["counts"] == {x.lower(): states.count(x) for x in set(states)} and study["direction"] == "maximize"

    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert study["best"]["number"] == best.number
    assert f"best trial {best.number}: val/accuracy=" in printed.out
    best_spec = yaml.safe_load((out / "best.yaml").read_text())
    assert best_spec["optimizer"]["lr"] == best.params["optimizer.lr"] and "tune" not in best_spec

    # The best spec is a plain spec: `unified run` trains it and, being deterministic, reproduces the trial.
    run_dir = tmp_path / "rerun"
    assert main(["run", str(out / "best.yaml"), "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["value"] == pytest.approx(best.value, abs=1e-9)


def test_all_trials_failing_exits_1(tune_spec, tmp_path: Path, capsys, torch_backend: str) -> None:
    spec = tune_spec({"optimizer": {"name": "sgd", "lr": 0.1},
                      "tune": {"space": {"optimizer.lr": {"type": "float", "low": 1e3, "high": 1e4, "log": True}}}})
    code = main(["tune", str(spec), "--backend", torch_backend, "--n-trials", "2"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "no trial completed" in captured.err and "study tt: 2 fail" in captured.out
