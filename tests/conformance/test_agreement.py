"""Cross-backend agreement: the same spec and seed give the same training on every installed backend."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from unified import UnifiedTrainer
from unified.registry import installed_backends

BACKENDS = installed_backends()

needs_two = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends to compare")


def _run(spec: dict, backend: str):
    result = UnifiedTrainer(spec, backend=backend).fit()
    with open(result.run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return result, list(reader.fieldnames or []), list(reader)


@needs_two
@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    {"name": "adam", "lr": 0.003},
    {"name": "adamw", "lr": 0.003},
])
def test_per_step_loss_agrees(make_spec, optimizer):
    spec = make_spec({"optimizer": optimizer, "trainer": {"max_epochs": 3, "log_every_n_steps": 1}})
    runs = {b: _run(spec, b) for b in BACKENDS}
    losses = {b: np.array([float(r["train/loss"]) for r in rows if r["train/loss"]]) for b, (_, _, rows) in runs.items()}
    for a, b in itertools.combinations(BACKENDS, 2):
        assert len(losses[a]) == len(losses[b]) == 135
        gap = np.max(np.abs(losses[a] - losses[b]))
        assert gap <= 1e-5, f"{a} vs {b}: per-step train/loss differs by {gap:.2e}"
        va, vb = runs[a][0].metrics["val/loss"], runs[b][0].metrics["val/loss"]
        assert abs(va - vb) <= 1e-5


@needs_two
def test_same_csv_columns_and_rows(make_spec):
    spec = make_spec({"trainer": {"max_epochs": 2, "max_steps": 70},
                      "callbacks": [{"early_stopping": {"monitor": "val/accuracy", "mode": "max"}}]})
    runs = {b: _run(spec, b) for b in BACKENDS}
    shapes = {b: (cols, [(r["epoch"], r["step"]) for r in rows]) for b, (_, cols, rows) in runs.items()}
    first = shapes[BACKENDS[0]]
    for b in BACKENDS[1:]:
        assert shapes[b] == first, f"{b} metrics.csv differs from {BACKENDS[0]}"


def _keras_torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("keras") is not None and importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(not _keras_torch_available() or len(BACKENDS) < 2, reason="needs keras, torch and a torch trainer")
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.05, "momentum": 0.9}, {"name": "adam", "lr": 0.003},
                                       {"name": "adamw", "lr": 0.003}])
def test_keras_on_torch_agrees_with_the_others(make_spec, optimizer, tmp_path):
    """Keras picks its tensor backend once per process: keras/torch runs in a subprocess."""
    import subprocess
    import sys

    import yaml

    spec = make_spec({"optimizer": optimizer, "trainer": {"max_epochs": 2, "log_every_n_steps": 1}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = subprocess.run([sys.executable, "-m", "unified", "run", str(path), "--backend", "keras",
                          "--keras-backend", "torch", "--run-dir", str(tmp_path / "kt")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(tmp_path / "kt" / "metrics.csv", newline="") as f:
        keras_losses = np.array([float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]])
    reference = next(b for b in BACKENDS if b != "keras")
    _, _, rows = _run(spec, reference)
    ref = np.array([float(r["train/loss"]) for r in rows if r["train/loss"]])
    assert len(ref) == len(keras_losses) == 90
    gap = np.max(np.abs(ref - keras_losses))
    assert gap <= 1e-5, f"keras/torch vs {reference}: per-step train/loss differs by {gap:.2e}"
