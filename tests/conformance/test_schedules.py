"""Schedulers, gradient accumulation, clipping and precision mean the same thing on every backend.

Iris (120 training rows) keeps the runs short: batch 8 gives 15 batches per epoch, so batch 4 with
accumulation 2 walks exactly the same samples per optimizer step, and batch 8 with accumulation 2
ends every epoch with a partial window (7 full windows + 1 batch = 8 optimizer steps).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from unified import UnifiedTrainer
from unified.errors import NotSupportedError
from unified.registry import installed_backends, load_adapter
from unified.schedules import Schedule, optimizer_steps_per_epoch, plan_schedule

BACKENDS = installed_backends()
IRIS = {"data": {"source": "sklearn:iris", "batch_size": 8}, "model": {"hidden": [16]},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "trainer": {"max_epochs": 2, "log_every_n_steps": 1}}


def _run(spec: dict, backend: str):
    trainer = UnifiedTrainer(spec, backend=backend)
    result = trainer.fit()
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return trainer, result, rows


def _steps(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["train/loss"]]


def _epochs(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["train/loss_epoch"]]


def _expected_lrs(spec_dict: dict, batches_per_epoch: int, epochs: int, steps_per_epoch: int,
                  metric_per_epoch: list[float] | None = None) -> tuple[list[float], list[float]]:
    """The lr of every optimizer step and of every epoch row, from unified.schedules (torch's formulas)."""
    from unified.spec import load_spec

    plan = plan_schedule(load_spec(spec_dict), batches_per_epoch)
    sched = Schedule(plan)
    per_step, per_epoch = [], []
    for e in range(epochs):
        for _ in range(steps_per_epoch):
            per_step.append(sched.lr)
            if plan.interval == "step":
                sched.step()
        per_epoch.append(per_step[-1])  # an epoch row logs the lr of the epoch's last step
        if plan.name == "reduce_on_plateau":
            sched.step(metric_per_epoch[e])
        elif plan.interval == "epoch":
            sched.step()
    return per_step, per_epoch


SCHEDULES = {
    # with accumulation 2 and a partial last window: 8 optimizer steps per epoch
    "cosine-warmup-step": ({"name": "cosine", "interval": "step", "warmup_steps": 3, "eta_min": 0.001},
                           {"accumulate_grad_batches": 2}),
    "onecycle-step": ({"name": "onecycle", "interval": "step", "max_lr": 0.2, "pct_start": 0.25}, {}),
    "step-epoch": ({"name": "step", "step_size": 1, "gamma": 0.5}, {"max_epochs": 3}),
}


@pytest.mark.parametrize("case", list(SCHEDULES), ids=list(SCHEDULES))
def test_lr_sequence_follows_torchs_schedule(backend, make_spec, case):
    scheduler, trainer = SCHEDULES[case]
    spec = make_spec({**IRIS, "scheduler": scheduler, "trainer": {**IRIS["trainer"], **trainer}})
    _, result, rows = _run(spec, backend)
    epochs = spec["trainer"]["max_epochs"]
    spe = optimizer_steps_per_epoch(15, spec["trainer"].get("accumulate_grad_batches", 1))  # 15 or 8
    want_steps, want_epochs = _expected_lrs(spec, 15, epochs, spe)
    got_steps = [float(r["lr"]) for r in _steps(rows)]
    got_epochs = [float(r["lr"]) for r in _epochs(rows)]
    assert result.global_step == epochs * spe
    # every optimizer step logged once, in its epoch (with accumulation 2: 7 windows + a partial one)
    assert [(int(r["epoch"]), int(r["step"])) for r in _steps(rows)] == \
        [(1 + (s - 1) // spe, s) for s in range(1, epochs * spe + 1)]
    assert got_steps == want_steps  # the very floats torch's scheduler produces, step by step
    assert got_epochs == want_epochs
    assert len(set(got_steps)) > 2


def test_reduce_on_plateau_steps_on_the_logged_monitor(backend, make_spec):
    # mode max on a falling val/loss: no epoch after the first is "better", so with patience 0 the
    # lr halves after every epoch from the second on
    sched = {"name": "reduce_on_plateau", "monitor": "val/loss", "mode": "max", "patience": 0, "factor": 0.5}
    spec = make_spec({**IRIS, "scheduler": sched, "trainer": {**IRIS["trainer"], "max_epochs": 4}})
    _, _, rows = _run(spec, backend)
    val = [float(r["val/loss"]) for r in _epochs(rows)]
    want_steps, want_epochs = _expected_lrs(spec, 15, 4, 15, val)
    assert [float(r["lr"]) for r in _epochs(rows)] == want_epochs
    assert [float(r["lr"]) for r in _steps(rows)] == want_steps
    assert want_epochs[-1] < want_epochs[0]


def test_accumulation_equals_the_bigger_batch(backend, make_spec):
    big = make_spec(IRIS)
    small = make_spec({**IRIS, "data": {**IRIS["data"], "batch_size": 4},
                       "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2}})
    _, rb, rows_b = _run(big, backend)
    _, rs, rows_s = _run(small, backend)
    lb = np.array([float(r["train/loss"]) for r in _steps(rows_b)])
    ls = np.array([float(r["train/loss"]) for r in _steps(rows_s)])
    assert rb.global_step == rs.global_step == 30
    assert [r["step"] for r in _steps(rows_b)] == [r["step"] for r in _steps(rows_s)]
    gap = np.max(np.abs(lb - ls))
    assert gap <= 1e-5, f"batch 4 x 2 vs batch 8: per-step train/loss differs by {gap:.2e}"
    assert abs(rb.metrics["val/loss"] - rs.metrics["val/loss"]) <= 1e-5


def test_max_steps_counts_optimizer_steps(backend, make_spec):
    # 15 batches, accumulation 2: 8 optimizer steps per epoch (the last window is one batch)
    spec = make_spec({**IRIS, "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2, "max_steps": 11}})
    _, result, rows = _run(spec, backend)
    assert (result.global_step, result.epochs) == (11, 2)
    assert [int(r["step"]) for r in _epochs(rows)] == [8, 11]


def test_clipping_bounds_the_update_by_the_global_norm(backend, make_spec):
    from unified.data import load_dataset
    from unified.models import build_plan

    spec = make_spec({**IRIS, "optimizer": {"name": "sgd", "lr": 1.0},
                      "trainer": {**IRIS["trainer"], "max_steps": 1, "gradient_clip_norm": 0.01,
                                  "accumulate_grad_batches": 2}})
    trainer = UnifiedTrainer(spec, backend=backend)
    ds = load_dataset(trainer.spec)
    before = build_plan(trainer.spec, ds.in_features, ds.out_features).weights
    trainer.fit()
    after = trainer._adapter.get_weights()
    step = math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in before))
    # plain SGD, lr 1: the update is the clipped gradient, whose global norm is 0.01 * n / (n + 1e-6)
    assert step == pytest.approx(0.01, rel=1e-4)


def test_bf16_mixed_trains_and_is_recorded(backend, make_spec):
    spec = make_spec({**IRIS, "optimizer": {"name": "adam", "lr": 0.01},
                      "trainer": {**IRIS["trainer"], "max_epochs": 3, "precision": "bf16-mixed"}})
    trainer, result, rows = _run(spec, backend)
    losses = [float(r["train/loss_epoch"]) for r in _epochs(rows)]
    assert losses[-1] < 0.8 * losses[0], losses
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16-mixed"
    assert yaml.safe_load((result.run_dir / "spec.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    # predict() runs in bf16 too: it differs from a float32 forward pass of the same weights by bf16 rounding
    w = trainer._adapter.get_weights()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    ref = np.maximum(x @ w["layers.0.weight"].T + w["layers.0.bias"], 0) @ w["layers.1.weight"].T + w["layers.1.bias"]
    got = trainer._adapter.predict(x)
    assert got.dtype == np.float32
    assert 1e-4 < np.max(np.abs(got - ref)) < 0.1
    if "keras" in sys.modules:  # the mixed policy did not leak into later runs in this process
        assert sys.modules["keras"].config.dtype_policy().name == "float32"


def test_16_mixed_is_refused_up_front_where_unsupported(backend, make_spec, tmp_path):
    if "precision:16-mixed" in load_adapter(backend).features:
        pytest.skip(f"{backend} supports 16-mixed")
    spec = make_spec({**IRIS, "trainer": {**IRIS["trainer"], "precision": "16-mixed"}})
    with pytest.raises(NotSupportedError, match="16-mixed.*bf16-mixed"):
        UnifiedTrainer(spec, backend=backend).fit()
    assert not any((tmp_path / "runs").rglob("summary.json"))  # nothing was started


def test_plateau_on_val_without_validation_data_is_refused_up_front(backend, make_spec, tmp_path):
    from unified.errors import SpecError

    spec = make_spec({**IRIS, "data": {**IRIS["data"], "val_fraction": 0.0},
                      "scheduler": {"name": "reduce_on_plateau"}})
    with pytest.raises(SpecError, match="scheduler.monitor.*no validation data"):
        UnifiedTrainer(spec, backend=backend).fit()
    assert not any((tmp_path / "runs").rglob("summary.json"))


AGREE = {**IRIS, "scheduler": {"name": "cosine", "interval": "step", "warmup_steps": 3},
         "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2, "gradient_clip_norm": 0.5}}


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends to compare")
def test_accumulation_clipping_schedule_agree_across_backends(make_spec):
    spec = make_spec(AGREE)
    runs = {b: _run(spec, b) for b in BACKENDS}
    for a, b in itertools.combinations(BACKENDS, 2):
        la = np.array([float(r["train/loss"]) for r in _steps(runs[a][2])])
        lb = np.array([float(r["train/loss"]) for r in _steps(runs[b][2])])
        assert len(la) == len(lb) == 16
        assert np.max(np.abs(la - lb)) <= 1e-5, f"{a} vs {b}: {np.max(np.abs(la - lb)):.2e}"
        assert [r["lr"] for r in runs[a][2]] == [r["lr"] for r in runs[b][2]]
        assert abs(runs[a][1].metrics["val/loss"] - runs[b][1].metrics["val/loss"]) <= 1e-5


KERAS_TORCH_SCRIPT = r'''
import csv, json, sys, yaml
from unified import UnifiedTrainer
out = {}
for name, path in (("agree", sys.argv[1]), ("bf16", sys.argv[2])):
    trainer = UnifiedTrainer(yaml.safe_load(open(path)), backend="keras")
    result = trainer.fit()
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    out[name] = {"rows": rows, "val": result.metrics["val/loss"], "step": result.global_step,
                 "summary": json.load(open(result.run_dir / "summary.json"))}
import keras
out["backend"] = keras.backend.backend()
out["policy_after"] = keras.config.dtype_policy().name
print("RESULT" + json.dumps(out))
'''


def _keras_torch_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("keras", "torch"))


@pytest.mark.skipif(not _keras_torch_available() or not [b for b in BACKENDS if b != "keras"],
                    reason="needs keras, torch and a torch trainer")
def test_keras_on_torch_same_semantics(make_spec, tmp_path):
    """Keras picks its tensor backend once per process: keras/torch runs in a subprocess."""
    agree = make_spec(AGREE)
    bf16 = make_spec({**IRIS, "optimizer": {"name": "adam", "lr": 0.01},
                      "trainer": {**IRIS["trainer"], "max_epochs": 3, "precision": "bf16-mixed"}})
    paths = []
    for name, spec in (("agree", agree), ("bf16", bf16)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "keras_backend": "torch"}))
        paths.append(str(path))
    out = subprocess.run([sys.executable, "-c", KERAS_TORCH_SCRIPT, *paths], capture_output=True, text=True,
                         timeout=600, cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.split("RESULT", 1)[1])
    assert got["backend"] == "torch" and got["policy_after"] == "float32"
    reference = next(b for b in BACKENDS if b != "keras")
    _, ref, ref_rows = _run(agree, reference)
    kt = got["agree"]["rows"]
    assert got["agree"]["step"] == ref.global_step == 16
    la = np.array([float(r["train/loss"]) for r in _steps(kt)])
    lb = np.array([float(r["train/loss"]) for r in _steps(ref_rows)])
    assert np.max(np.abs(la - lb)) <= 1e-5, f"keras/torch vs {reference}: {np.max(np.abs(la - lb)):.2e}"
    assert [r["lr"] for r in kt] == [r["lr"] for r in ref_rows]
    assert abs(got["agree"]["val"] - ref.metrics["val/loss"]) <= 1e-5
    losses = [float(r["train/loss_epoch"]) for r in _epochs(got["bf16"]["rows"])]
    assert losses[-1] < 0.8 * losses[0] and got["bf16"]["summary"]["precision"] == "bf16-mixed"
