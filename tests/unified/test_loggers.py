"""The TensorBoard and MLflow loggers: params, run status, bad tracking URIs, missing packages, no TensorFlow."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import unified
from unified import UnifiedTrainer
from unified.callbacks import Callback
from unified.cli import main
from unified.errors import TrainingError
from unified.loggers import flatten_params
from unified.registry import installed_backends

BACKENDS = installed_backends()
# The loggers are facade code: one backend is enough for what does not depend on it (the conformance
# suite runs the same-points check on every backend). Ignite raises a callback's KeyboardInterrupt as is.
BACKEND = "ignite" if "ignite" in BACKENDS else (BACKENDS or [None])[0]
needs_backend = pytest.mark.skipif(BACKEND is None, reason="needs a training backend")
PROJECT_ROOT = str(Path(unified.__file__).resolve().parents[1])

SPEC = """\
name: lg
data: {source: "sklearn:iris", val_fraction: 0.2, batch_size: 16}
model: {arch: mlp, hidden: [8]}
trainer: {max_epochs: 2, log_every_n_steps: 2, progress_bar: false}
logging: {dir: runs, loggers: [tensorboard, mlflow]}
"""


def test_flatten_params():
    spec = {"name": "x", "model": {"hidden": [32, 16], "kwargs": {}, "dropout": None},
            "metrics": ["accuracy", {"python": {"target": "m:C", "kwargs": {"k": 2}}}],
            "callbacks": [{"early_stopping": {"patience": 3, "restore_best_weights": False}}],
            "optimizer": {"lr": 0.001}}
    assert flatten_params(spec) == {
        "name": "x", "model.hidden": "[32, 16]", "model.kwargs": "{}", "model.dropout": "null",
        "metrics.0": "accuracy", "metrics.1.python.target": "m:C", "metrics.1.python.kwargs.k": "2",
        "callbacks.0.early_stopping.patience": "3", "callbacks.0.early_stopping.restore_best_weights": "false",
        "optimizer.lr": "0.001",
    }


def test_import_loads_neither_package():
    code = ("import sys, json, unified, unified.trainer, unified.loggers, unified.events;"
            "print(json.dumps([m for m in ('mlflow', 'tensorboard') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_tensorboard_writer_works_without_tensorflow(tmp_path):
    # A torch-only install: `import tensorflow` fails. Writing (and TensorBoard's own reader) must work.
    code = textwrap.dedent(f"""
        import sys, json
        sys.modules["tensorflow"] = None  # import tensorflow -> ImportError
        from unified.loggers import TensorBoardLogger
        tb = TensorBoardLogger({str(tmp_path / 'tb')!r})
        tb.log(1, 5, {{"train/loss": 0.5, "lr": 0.1}})
        tb.log(1, 10, {{"train/loss": 0.25, "lr": 0.1, "val/loss": float("nan")}})
        tb.close("completed")
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator({str(tmp_path / 'tb')!r})
        acc.Reload()
        print(json.dumps({{"tf": sorted(m for m in sys.modules if m.startswith("tensorflow") and sys.modules[m]),
                          "scalars": {{t: [[e.step, repr(e.value)] for e in acc.Scalars(t)]
                                      for t in acc.Tags()["scalars"]}}}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tf"] == []
    assert got["scalars"] == {"train/loss": [[5, "0.5"], [10, "0.25"]],
                              "lr": [[5, repr(float(np.float32(0.1)))], [10, repr(float(np.float32(0.1)))]],
                              "val/loss": [[10, "nan"]]}


class _Raise(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_epoch_end(self, state) -> None:
        if state.epoch == 1:
            raise self.error


def _mlflow(summary: dict):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    return client, client.get_run(summary["mlflow"]["run_id"])


@needs_backend
def test_default_store_statuses_and_no_files_outside_logging_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC)
    ok = UnifiedTrainer("s.yaml", backend=BACKEND).fit()
    db = (tmp_path / "runs" / "mlflow.db").resolve()
    assert ok.summary["mlflow"]["tracking_uri"] == f"sqlite:///{db}"
    assert ok.summary["mlflow"]["experiment"] == "lg"
    client, run = _mlflow(ok.summary)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.source"] == "sklearn:iris"
    assert run.data.tags["unified.backend"] == BACKEND
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "s.yaml"]  # no ./mlruns

    statuses = {}
    for error, raised, status in ((KeyboardInterrupt(), KeyboardInterrupt, "interrupted"),
                                  (RuntimeError("boom"), TrainingError, "failed")):
        trainer = UnifiedTrainer("s.yaml", backend=BACKEND, callbacks=[_Raise(error)])
        with pytest.raises(raised):
            trainer.fit()
        summary = json.loads((trainer.run_dir / "summary.json").read_text())
        assert summary["status"] == status
        client, run = _mlflow(summary)
        statuses[status] = run.info.status
        # the epoch-1 rows reached MLflow before the error
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [summary["global_step"]]
        assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert statuses == {"interrupted": "KILLED", "failed": "FAILED"}


class _DeleteMlflowRun(Callback):
    """Deletes the run's MLflow run mid-training: MLflow then refuses every write to it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def on_fit_start(self, state) -> None:
        from mlflow.tracking import MlflowClient

        summary = json.loads((state.run_dir / "summary.json").read_text())
        MlflowClient(tracking_uri=self.uri).delete_run(summary["mlflow"]["run_id"])


@needs_backend
def test_mlflow_failing_mid_run_warns_and_training_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    trainer = UnifiedTrainer("s.yaml", backend=BACKEND, callbacks=[_DeleteMlflowRun(uri)])
    result = trainer.fit()
    assert result.status == "completed"
    assert "must be in the 'active' state" in result.summary["mlflow"]["error"]
    err = capsys.readouterr().err
    assert err.count("unified: warning: mlflow logging failed, continuing without it") == 1
    tb = list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(tb) == 1 and tb[0].stat().st_size > 100  # the other logger kept going


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(capsys, tmp_path, *sets: str) -> tuple[int, str]:
    (tmp_path / "s.yaml").write_text(SPEC)
    argv = ["run", str(tmp_path / "s.yaml"), "--backend", BACKEND]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    return code, capsys.readouterr().err


@needs_backend
@pytest.mark.parametrize("uri, expected", [
    ("foo://bar", "logging.mlflow.tracking_uri: cannot use MLflow tracking URI 'foo://bar': "),
    ("http://127.0.0.1:{port}", "logging.mlflow.tracking_uri: cannot use MLflow tracking URI 'http://127.0.0.1:"),
    ("sqlite:////proc/no/such/dir/mlflow.db", "logging.mlflow.tracking_uri: cannot use MLflow tracking URI"),
    ("postgresql://me:secret@127.0.0.1:{port}/ml", "cannot use MLflow tracking URI 'postgresql://me:***@127.0.0.1:"),
])
def test_bad_tracking_uri_exits_2_before_training(capsys, tmp_path, monkeypatch, uri, expected):
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, tmp_path, f"logging.mlflow.tracking_uri={uri.format(port=_free_port())}")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unified: error: ") and expected in lines[0], err
    assert "Traceback" not in err and "secret" not in err
    assert not (tmp_path / "runs" / "lg").exists()  # no run directory was created


@needs_backend
def test_deleted_experiment_exits_2(capsys, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment("gone"))
    code, err = _cli(capsys, tmp_path, f"logging.mlflow.tracking_uri={uri}", "logging.mlflow.experiment=gone")
    assert code == 2
    assert "logging.mlflow.experiment: MLflow experiment 'gone' is deleted" in err
    assert not (tmp_path / "runs" / "lg").exists()


@needs_backend
@pytest.mark.parametrize("package, extra", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_missing_package_names_the_extra(capsys, tmp_path, monkeypatch, package, extra):
    # Both packages are installed here, so their absence is simulated at the lookup.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, tmp_path, f"logging.loggers=[{package}]")
    assert code == 2
    assert f"logging.loggers: '{package}' needs the {package} package" in err
    assert f'pip install "unified-trainer[{extra}]"' in err
    assert not (tmp_path / "runs" / "lg").exists()


def test_every_backend_lists_the_loggers():
    from unified.registry import load_adapter

    for name in BACKENDS:
        cls = load_adapter(name)
        assert {"logger:tensorboard", "logger:mlflow"} <= cls.features
        assert cls.unsupported(unified.load_spec({"data": {"source": "sklearn:iris"},
                                                  "logging": {"loggers": ["tensorboard", "mlflow"]}})) == []


def _points(run_dir: Path, summary: dict) -> tuple[dict, dict, dict]:
    """``(key, step) -> set of values`` from metrics.csv, the TensorBoard events and the MLflow run."""
    import csv
    from collections import defaultdict

    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    want, tb, ml = defaultdict(set), defaultdict(set), defaultdict(set)
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k not in ("epoch", "step") and v:
                    want[(k, int(row["step"]))].add(float(np.float32(v)))
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            tb[(tag, e.step)].add(e.value)
    client = MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    for key in client.get_run(summary["mlflow"]["run_id"]).data.metrics:
        for m in client.get_metric_history(summary["mlflow"]["run_id"], key):
            ml[(key, m.step)].add(float(np.float32(m.value)))
    return dict(want), dict(tb), dict(ml)


@needs_backend
def test_resume_in_place_rewrites_the_csv_history(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC)
    first = UnifiedTrainer("s.yaml", backend=BACKEND, overrides={"trainer.max_epochs": 1}).fit()
    second = UnifiedTrainer("s.yaml", backend=BACKEND, overrides={"trainer.max_epochs": 3}).fit(resume=str(first.run_dir))
    assert second.run_dir == first.run_dir and second.epochs == 3
    want, tb, ml = _points(second.run_dir, second.summary)
    assert len({s for _, s in want}) > 10 and tb == want and ml == want
    assert len(list((second.run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    client = MlflowClient(tracking_uri=second.summary["mlflow"]["tracking_uri"])
    new = client.get_run(second.summary["mlflow"]["run_id"])
    assert new.data.tags["unified.resumed_from_mlflow_run"] == first.summary["mlflow"]["run_id"] != new.info.run_id
    assert new.data.params["trainer.max_epochs"] == "3" and new.info.status == "FINISHED"


@needs_backend
def test_validate_checks_the_tracking_uri(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC)
    code = main(["validate", "s.yaml", "--backend", BACKEND, "--set", "logging.mlflow.tracking_uri=foo://x"])
    err = capsys.readouterr().err
    assert code == 2 and "logging.mlflow.tracking_uri: cannot use MLflow tracking URI 'foo://x'" in err


def test_mlflow_points_are_sent_by_a_background_thread(tmp_path):
    import time

    from unified.loggers import MlflowLogger
    from unified.spec import load_spec

    spec = load_spec({"name": "bg", "data": {"source": "sklearn:iris"},
                      "logging": {"dir": str(tmp_path), "loggers": ["mlflow"]}}).resolved(backend="ignite")
    ml = MlflowLogger.connect(spec)
    (tmp_path / "run").mkdir()
    ml.start(tmp_path / "run", spec)
    for step in range(1, 1501):  # 3000 points: past 1000 the flusher thread is woken
        ml.log(1, step, {"train/loss": 1.0 / step, "lr": 0.1})
    deadline = time.monotonic() + 60
    while len(ml._buffer) >= 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ml._buffer) < 1000, "nothing was sent before the end of the run"
    ml.close("stopped_early")
    run = ml.client.get_run(ml.run_id)
    assert run.info.status == "FINISHED"
    history = ml.client.get_metric_history(ml.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / s) for s in range(1, 1501)]


def test_first_runs_started_together_share_one_new_store(tmp_path):
    # Without a lock, processes creating the same SQLite store at once race in MLflow's migrations.
    code = textwrap.dedent(f"""
        from unified.loggers import MlflowLogger
        from unified.spec import load_spec
        spec = load_spec({{"name": "race", "data": {{"source": "sklearn:iris"}},
                          "logging": {{"dir": {str(tmp_path / 'runs')!r}, "loggers": ["mlflow"]}}}})
        print(MlflowLogger.connect(spec).experiment_id)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=PROJECT_ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
