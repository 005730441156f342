"""TensorBoard and MLflow hold what metrics.csv holds: the same keys at the same steps, on every backend."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from unified import UnifiedTrainer
from unified.registry import installed_backends

LOGGERS = {"loggers": ["csv", "tensorboard", "mlflow"]}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module (a new store costs seconds of schema migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def csv_points(run_dir: Path) -> dict[tuple[str, int], set[float]]:
    """``(key, step) -> values`` of every non-empty metrics.csv cell (a key can appear twice at a step)."""
    out: dict[tuple[str, int], set[float]] = defaultdict(set)
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key, cell in row.items():
                if key not in ("epoch", "step") and cell != "":
                    out[(key, int(row["step"]))].add(float(cell))
    return dict(out)


def tensorboard_points(run_dir: Path) -> dict[tuple[str, int], set[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[tuple[str, int], set[float]] = defaultdict(set)
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            out[(tag, ev.step)].add(ev.value)
    return dict(out)


def mlflow_run(summary: dict):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    return client, client.get_run(summary["mlflow"]["run_id"])


def mlflow_points(summary: dict) -> dict[tuple[str, int], set[float]]:
    client, run = mlflow_run(summary)
    out: dict[tuple[str, int], set[float]] = defaultdict(set)
    for key in run.data.metrics:
        for m in client.get_metric_history(run.info.run_id, key):
            out[(key, m.step)].add(m.value)
    return dict(out)


def check_same_points(run_dir: Path, spec_changes: dict) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    want = csv_points(run_dir)
    tb = tensorboard_points(run_dir)
    ml = mlflow_points(summary)
    assert len(want) >= 10 and {k for k, _ in want} >= {"train/loss", "lr", "train/loss_epoch", "val/loss"}
    assert set(tb) == set(want), "TensorBoard (key, step) pairs differ from metrics.csv"
    assert set(ml) == set(want), "MLflow (key, step) pairs differ from metrics.csv"
    for point, values in want.items():
        # TensorBoard scalars are float32; MLflow keeps the float64 written to the CSV.
        assert tb[point] == {float(np.float32(v)) for v in values}, point
        assert ml[point] == values, point

    client, run = mlflow_run(summary)
    assert run.info.status == "FINISHED"
    params = run.data.params
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert params["backend"] == spec["backend"]
    assert params["optimizer.lr"] == str(spec_changes["optimizer"]["lr"])
    assert params["trainer.max_epochs"] == "2"
    assert params["model.hidden"] == "[32]"
    assert params["data.source"] == "sklearn:digits"
    assert params["logging.loggers"] == json.dumps(LOGGERS["loggers"])
    assert params["callbacks.0.early_stopping.patience"] == "5"
    assert len(params) > 40
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "summary.json", "metrics.csv"} <= artifacts
    assert summary["mlflow"]["run_id"] == run.info.run_id


def test_csv_tensorboard_mlflow_hold_the_same_points(target, make_spec, shared_store, run_target):
    changes = {"optimizer": {"lr": 0.003},
               "logging": {**LOGGERS, "mlflow": {"tracking_uri": shared_store, "experiment": "conformance"}},
               "callbacks": [{"early_stopping": {"monitor": "val/loss", "patience": 5}}]}
    result = run_target(target, make_spec(changes)).ok()
    summary = result.summary
    assert summary["status"] == "completed" and not math.isnan(summary["metrics"]["val/loss"])
    assert summary["backend"] == target.backend and summary["keras_backend"] == target.variant
    assert summary["mlflow"]["experiment"] == "conformance"
    assert summary["mlflow"]["tracking_uri"] == shared_store
    assert f"mlflow: run {summary['mlflow']['run_id']} in experiment 'conformance'" in result.stdout
    check_same_points(result.run_dir, changes)


def test_mlflow_experiment_defaults_to_the_spec_name(make_spec, shared_store):
    """The facade names the experiment (the same on every backend: checked on one)."""
    backend = installed_backends()[0]
    changes = {"logging": {"loggers": ["csv", "mlflow"], "mlflow": {"tracking_uri": shared_store}},
               "trainer": {"max_steps": 3}}
    result = UnifiedTrainer(make_spec(changes), backend=backend).fit()
    assert result.summary["mlflow"]["experiment"] == "t"  # the spec name when logging.mlflow.experiment is null
    _, run = mlflow_run(result.summary)
    assert run.info.status == "FINISHED" and run.data.params["backend"] == backend
