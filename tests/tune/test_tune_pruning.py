"""Pruning goes through the facade's callbacks, so a clearly bad trial is pruned on every backend."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from unified.tune import tune  # noqa: E402


def test_a_clearly_bad_trial_is_pruned(backend: str, tmp_path: Path) -> None:
    good, bad = 0.03, 1e-7  # adam on iris: lr 1e-7 leaves the loss where it started
    spec = {
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
