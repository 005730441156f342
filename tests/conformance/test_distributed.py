"""Multi-process training (trainer.devices: 2) from `unified run`, on every installed backend.

Each process takes its contiguous half of every global batch and DDP averages the gradients, so with
the same global batch two processes follow the single-process run: the test pins val/loss and every
logged train loss within 1e-5. Backends without multi-process support must refuse up front (exit 2).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unified import UnifiedTrainer


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_processes_match_one(backend, make_spec, tmp_path):
    spec = make_spec({"data": {"source": "sklearn:iris", "batch_size": 16, "standardize": True},
                      "model": {"hidden": [16]}, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                      "trainer": {"max_epochs": 3, "log_every_n_steps": 2}, "metrics": ["accuracy"]})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    tmp = tmp_path / "tmp"  # where rank 1 keeps its throw-away run directory
    tmp.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "unified", "run", str(spec_path), "--backend", backend,
           "--run-dir", str(tmp_path / "two"), "--set", "trainer.devices=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    if backend == "keras":
        assert proc.returncode == 2, proc.stderr
        assert "trainer.devices" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "two").exists()
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1, proc.stdout  # only rank 0 reports

    one = UnifiedTrainer(spec, backend=backend, run_dir=tmp_path / "one").fit()
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one.summary["world_size"] == 1
    assert two["status"] == "completed" and two["global_step"] == one.global_step
    assert abs(two["metrics"]["val/loss"] - one.metrics["val/loss"]) <= 1e-5
    rows_one, rows_two = _rows(tmp_path / "one" / "metrics.csv"), _rows(tmp_path / "two" / "metrics.csv")
    assert [(r["epoch"], r["step"]) for r in rows_one] == [(r["epoch"], r["step"]) for r in rows_two]
    for a, b in zip(rows_one, rows_two):
        for key in ("train/loss", "train/loss_epoch", "val/loss"):
            if a[key]:
                assert abs(float(a[key]) - float(b[key])) <= 1e-5, (key, a, b)
    # rank 1 wrote nothing that lasts: one run directory, one set of checkpoints
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert not [p for p in tmp.iterdir() if p.name.startswith("unified-rank")]


def test_num_nodes_without_torchrun_is_refused(make_spec, tmp_path):
    pytest.importorskip("ignite")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec({"trainer": {"num_nodes": 2}})))
    proc = subprocess.run([sys.executable, "-m", "unified", "run", str(spec_path), "--backend", "ignite"],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "trainer.num_nodes" in proc.stderr and "torchrun" in proc.stderr and "Traceback" not in proc.stderr
