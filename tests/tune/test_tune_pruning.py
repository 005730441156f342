"""Pruning goes through the facade's callbacks, so a clearly bad trial is pruned on every backend."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from unified.tune import tune  # noqa: E402


GOOD, BAD = 0.03, 1e-7  # adam on iris: lr 1e-7 leaves the loss where it started


def _spec(tmp_path: Path) -> dict:
    good, bad = GOOD, BAD
    return {
        "name": "prune", "seed": 0,
        "data": {"source": "sklearn:iris", "standardize": True, "val_fraction": 0.3, "batch_size": 16},
        "model": {"arch": "mlp", "hidden": [16]},
        "trainer": {"max_epochs": 3, "log_every_n_steps": 5, "progress_bar": False},
        "logging": {"dir": str(tmp_path / "runs")},
        "tune": {
            "n_trials": 3, "pruner": "median", "pruner_startup_trials": 2,
            "space": {"optimizer.lr": {"type": "float", "low": 1e-8, "high": 0.1, "log": True}},
            "enqueue": [{"optimizer.lr": good}, {"optimizer.lr": good}, {"optimizer.lr": bad}],
        },
    }


def test_a_clearly_bad_trial_is_pruned(backend: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    bad = BAD
    lines: list[str] = []
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    result = tune(spec, backend, storage=storage, echo=lines.append)
    assert result is not None and result.counts == {"complete": 2, "pruned": 1}, lines

    trials = sorted(optuna.load_study(study_name="prune", storage=storage).trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[2].params == {"optimizer.lr": bad}
    assert list(trials[2].intermediate_values) == [1]  # reported once, then stopped
    assert trials[2].intermediate_values[1] > max(t.intermediate_values[1] for t in trials[:2])

    pruned_dir = Path(trials[2].user_attrs["run_dir"])
    summary = json.loads((pruned_dir / "summary.json").read_text())
    assert summary["status"] == "stopped_early" and summary["epochs"] == 1
    assert summary["stop_reason"].startswith("pruned by optuna at epoch 1")
    info = json.loads((pruned_dir / "tune.json").read_text())
    assert info["state"] == "pruned" and info["pruned_epoch"] == 1 and info["trial"] == 2
    epoch_rows = [r for r in csv.DictReader((pruned_dir / "metrics.csv").open()) if r["val/loss"]]
    assert len(epoch_rows) == 1
    for t in trials[:2]:  # the good ones ran all their epochs
        s = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert s["status"] == "completed" and s["epochs"] == 3
    assert result.best is not None and result.best["number"] in (0, 1)


@pytest.mark.skipif(importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None,
                    reason="needs keras and torch")
def test_a_clearly_bad_trial_is_pruned_on_keras_torch(tmp_path: Path) -> None:
    """Keras picks its tensor backend once per process: keras/torch tunes in a subprocess."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    r = subprocess.run([sys.executable, "-m", "unified", "tune", str(path), "--backend", "keras",
                        "--keras-backend", "torch", "--storage", storage], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = sorted(optuna.load_study(study_name="prune", storage=storage).trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    summary = json.loads((Path(trials[2].user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["keras_backend"] == "torch" and summary["status"] == "stopped_early" and summary["epochs"] == 1
