"""`unified run` on every installed backend: exit codes and what it leaves on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from unified.cli import main


def _write(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_run_ok(backend, make_spec, tmp_path, capsys):
    path = _write(tmp_path, make_spec())
    run_dir = tmp_path / "the-run"
    assert main(["run", path, "--backend", backend, "--run-dir", str(run_dir), "--set", "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {run_dir}" in out and "status: completed" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["backend"] == backend
    resolved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert resolved["backend"] == backend and resolved["trainer"]["max_epochs"] == 1 and resolved["loss"] == "cross_entropy"
    # the same run directory is not reused
    assert main(["run", path, "--backend", backend, "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_run_training_failure_exits_1(backend, make_spec, tmp_path, capsys, user_code):
    spec = make_spec({"trainer": {"max_epochs": 3}, "callbacks": [{"python": {"target": f"{user_code}:Exploder"}}]})
    run_dir = tmp_path / "r"
    assert main(["run", _write(tmp_path, spec), "--backend", backend, "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "boom at epoch 2" in err[0] and "Traceback" not in err[0]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_run_unsupported_feature_exits_2(backend, make_spec, tmp_path, capsys):
    path = _write(tmp_path, make_spec({"trainer": {"precision": "16-mixed"}, "export": {"formats": ["tflite"]}}))
    assert main(["run", path, "--backend", backend, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0]
    # the first refusal found: the export format (torch backends) or the precision (16-mixed needs a GPU)
    assert ("16-mixed" in err[0] and ("needs a GPU" in err[0] or "sees none" in err[0])) or \
        ("tflite is not available" in err[0] and f"backend {backend}" in err[0])
    assert not (tmp_path / "r" / "summary.json").exists()


def test_console_script_end_to_end(backend, make_spec, tmp_path):
    path = _write(tmp_path, make_spec({"trainer": {"max_epochs": 1, "progress_bar": True}}))
    out = subprocess.run([sys.executable, "-m", "unified", "run", path, "--backend", backend,
                          "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch 1/1" in out.stderr  # the progress line (one line per epoch when not a terminal)
    assert "Traceback" not in out.stderr and "GPU available" not in out.stderr + out.stdout
