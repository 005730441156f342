"""Cross-backend agreement: the same spec and seed give the same training on every installed backend."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from unified import UnifiedTrainer
from unified.registry import installed_backends

BACKENDS = installed_backends()

pytestmark = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends to compare")


def _run(spec: dict, backend: str):
    result = UnifiedTrainer(spec, backend=backend).fit()
    with open(result.run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return result, list(reader.fieldnames or []), list(reader)


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


def test_same_csv_columns_and_rows(make_spec):
    spec = make_spec({"trainer": {"max_epochs": 2, "max_steps": 70},
                      "callbacks": [{"early_stopping": {"monitor": "val/accuracy", "mode": "max"}}]})
    runs = {b: _run(spec, b) for b in BACKENDS}
    shapes = {b: (cols, [(r["epoch"], r["step"]) for r in rows]) for b, (_, cols, rows) in runs.items()}
    first = shapes[BACKENDS[0]]
    for b in BACKENDS[1:]:
        assert shapes[b] == first, f"{b} metrics.csv differs from {BACKENDS[0]}"
