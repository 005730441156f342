"""Schedulers, gradient accumulation, clipping and precision mean the same thing on every backend.

Iris (120 training rows) keeps the runs short: batch 8 gives 15 batches per epoch, so batch 4 with
accumulation 2 walks exactly the same samples per optimizer step, and batch 8 with accumulation 2
ends every epoch with a partial window (7 full windows + 1 batch = 8 optimizer steps).
"""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
import yaml

from unified import UnifiedTrainer, load_spec
from unified.registry import load_adapter
from unified.schedules import Schedule, optimizer_steps_per_epoch, plan_schedule

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
PLATEAU = {"name": "reduce_on_plateau", "monitor": "val/loss", "mode": "max", "patience": 0, "factor": 0.5}
AGREE = {**IRIS, "scheduler": {"name": "cosine", "interval": "step", "warmup_steps": 3},
         "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2, "gradient_clip_norm": 0.5}}
BF16 = {**IRIS, "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {**IRIS["trainer"], "max_epochs": 3, "precision": "bf16-mixed"}}

# What a target refuses up front today by design (README, "What works on which backend": accumulation and
# clipping on keras tensorflow / torch, not jax): target -> (does the spec need it, the one line it answers
# with). A limit that gets lifted is no failure: the run is then judged like any other.
LIMITS = {
    "keras-jax": (lambda spec: spec["trainer"].get("accumulate_grad_batches", 1) > 1
                  or spec["trainer"].get("gradient_clip_norm") is not None,
                  "trainer.accumulate_grad_batches / gradient_clip_norm on keras_backend 'jax' are not supported yet"),
}


def _cases() -> dict[str, dict]:
    """Every run this module judges from a run directory: name -> spec changes (iris, tiny)."""
    cases = {name: {**IRIS, "scheduler": sched, "trainer": {**IRIS["trainer"], **trainer}}
             for name, (sched, trainer) in SCHEDULES.items()}
    cases["plateau"] = {**IRIS, "scheduler": PLATEAU, "trainer": {**IRIS["trainer"], "max_epochs": 4}}
    cases["batch-8"] = IRIS
    cases["batch-4-acc-2"] = {**IRIS, "data": {**IRIS["data"], "batch_size": 4},
                              "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2}}
    cases["max-steps"] = {**IRIS, "trainer": {**IRIS["trainer"], "accumulate_grad_batches": 2, "max_steps": 11}}
    # bf16 before agree: a mixed-precision policy leaking into the next run of the same process would
    # show up as a disagreement below
    cases["bf16"] = BF16
    cases["agree"] = AGREE
    cases["fp16"] = {**IRIS, "trainer": {**IRIS["trainer"], "precision": "16-mixed"}}
    cases["plateau-no-val"] = {**IRIS, "data": {**IRIS["data"], "val_fraction": 0.0},
                               "scheduler": {"name": "reduce_on_plateau"}}
    return cases


def _must_refuse(target, spec: dict) -> str | None:
    """The line every run of ``spec`` on ``target`` is refused with (exit 2), None when it is not."""
    if spec["trainer"].get("precision") == "16-mixed":  # a backend without float16 AMP, or (torch) no GPU here
        cls = load_adapter(target.backend)
        if "precision:16-mixed" not in cls.features or not cls.gpu_probe(load_spec(spec)).count:
            return "16-mixed"
    if spec["data"].get("val_fraction") == 0.0:
        return "no validation data"
    return None


def _may_refuse(target, spec: dict) -> str | None:
    needs, line = LIMITS.get(target.name, (lambda spec: False, ""))
    return line if needs(spec) else None


@pytest.fixture
def runs(make_spec, run_target_shared):
    """``runs(target) -> {case: RunResult}``: all of a target's cases in one process, once for the session.

    The runs a target refuses (or may refuse) go first, so a target that fails early still has them checked.
    """

    def _runs(target):
        Job = run_target_shared.Job
        jobs = []
        for name, changes in _cases().items():
            spec = make_spec(changes)
            spec.pop("logging")  # the shared runner's directory
            expect = 2 if _must_refuse(target, spec) else (0, 2) if _may_refuse(target, spec) else 0
            jobs.append(Job(target, spec, name=name, expect=expect))
        return run_target_shared.many(sorted(jobs, key=lambda j: j.expect == 0))

    return _runs


def _refused(target, result, spec: dict) -> bool:
    """True when ``target`` refused ``spec`` as it must (or may): exit 2, that one line, nothing trained."""
    line = _must_refuse(target, spec) or _may_refuse(target, spec)
    result.ok()  # the exit code is one the job allows
    if line is None or result.exit_code != 2:
        return False
    err = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("unified: error:")]
    assert len(err) == 1 and line in err[0], result.stderr[-2000:]
    assert not result.step_rows()
    return True


@pytest.mark.parametrize("case", list(SCHEDULES), ids=list(SCHEDULES))
def test_lr_sequence_follows_torchs_schedule(target, make_spec, runs, case):
    spec = make_spec(_cases()[case])
    result = runs(target)[case]
    if _refused(target, result, spec):
        return
    rows = result.ok().rows
    epochs = spec["trainer"]["max_epochs"]
    spe = optimizer_steps_per_epoch(15, spec["trainer"].get("accumulate_grad_batches", 1))  # 15 or 8
    want_steps, want_epochs = _expected_lrs(spec, 15, epochs, spe)
    got_steps = [float(r["lr"]) for r in _steps(rows)]
    got_epochs = [float(r["lr"]) for r in _epochs(rows)]
    assert result.summary["global_step"] == epochs * spe
    # every optimizer step logged once, in its epoch (with accumulation 2: 7 windows + a partial one)
    assert [(int(r["epoch"]), int(r["step"])) for r in _steps(rows)] == \
        [(1 + (s - 1) // spe, s) for s in range(1, epochs * spe + 1)]
    assert got_steps == want_steps  # the very floats torch's scheduler produces, step by step
    assert got_epochs == want_epochs
    assert len(set(got_steps)) > 2


def test_reduce_on_plateau_steps_on_the_logged_monitor(target, make_spec, runs):
    # mode max on a falling val/loss: no epoch after the first is "better", so with patience 0 the
    # lr halves after every epoch from the second on
    spec = make_spec(_cases()["plateau"])
    rows = runs(target)["plateau"].ok().rows
    val = [float(r["val/loss"]) for r in _epochs(rows)]
    want_steps, want_epochs = _expected_lrs(spec, 15, 4, 15, val)
    assert [float(r["lr"]) for r in _epochs(rows)] == want_epochs
    assert [float(r["lr"]) for r in _steps(rows)] == want_steps
    assert want_epochs[-1] < want_epochs[0]


def test_accumulation_equals_the_bigger_batch(target, make_spec, runs):
    got = runs(target)
    big, small = got["batch-8"].ok(), got["batch-4-acc-2"]
    if _refused(target, small, make_spec(_cases()["batch-4-acc-2"])):
        return
    small.ok()
    assert big.summary["global_step"] == small.summary["global_step"] == 30
    assert [r["step"] for r in big.step_rows()] == [r["step"] for r in small.step_rows()]
    gap = np.max(np.abs(big.step_losses() - small.step_losses()))
    assert gap <= 1e-5, f"batch 4 x 2 vs batch 8: per-step train/loss differs by {gap:.2e}"
    assert abs(big.metrics["val/loss"] - small.metrics["val/loss"]) <= 1e-5


def test_max_steps_counts_optimizer_steps(target, make_spec, runs):
    # 15 batches, accumulation 2: 8 optimizer steps per epoch (the last window is one batch)
    result = runs(target)["max-steps"]
    if _refused(target, result, make_spec(_cases()["max-steps"])):
        return
    result.ok()
    assert (result.summary["global_step"], result.summary["epochs"]) == (11, 2)
    assert [int(r["step"]) for r in result.epoch_rows()] == [8, 11]


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


def test_bf16_mixed_predict_runs_in_bf16(backend, make_spec):
    """In this process (the run directory side is checked on every target below)."""
    trainer, _, _ = _run(make_spec(BF16), backend)
    # predict() runs in bf16 too: it differs from a float32 forward pass of the same weights by bf16 rounding
    w = trainer._adapter.get_weights()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    ref = np.maximum(x @ w["layers.0.weight"].T + w["layers.0.bias"], 0) @ w["layers.1.weight"].T + w["layers.1.bias"]
    got = trainer._adapter.predict(x)
    assert got.dtype == np.float32
    assert 1e-4 < np.max(np.abs(got - ref)) < 0.1
    if "keras" in sys.modules:  # the mixed policy did not leak into later runs in this process
        assert sys.modules["keras"].config.dtype_policy().name == "float32"


def test_bf16_mixed_trains_and_is_recorded_on_every_target(target, runs):
    result = runs(target)["bf16"].ok()
    losses = [float(r["train/loss_epoch"]) for r in result.epoch_rows()]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.summary["precision"] == "bf16-mixed"
    assert yaml.safe_load((result.run_dir / "spec.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"


REFUSED = ["fp16", "plateau-no-val"]


@pytest.mark.parametrize("case", REFUSED)
def test_impossible_settings_are_refused_up_front(target, make_spec, runs, case):
    """16-mixed where a backend has no float16 AMP on CPU; a plateau scheduler on val/loss without
    validation data: exit 2, one line, nothing trained."""
    spec = make_spec(_cases()[case])
    if _must_refuse(target, spec) is None:
        pytest.skip(f"{target.name} supports {case}")
    assert _refused(target, runs(target)[case], spec)


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_run_leaves_no_run_behind(target, make_spec, runs, case):
    spec = make_spec(_cases()[case])
    if _must_refuse(target, spec) is None:
        pytest.skip(f"{target.name} supports {case}")
    result = runs(target)[case]
    assert result.exit_code == 2
    assert result.summary is None, f"a refused run left summary.json: {result.summary}"
    assert not result.run_dir.exists() or not any(result.run_dir.iterdir()), \
        f"a refused run left files in {result.run_dir}: {sorted(p.name for p in result.run_dir.iterdir())}"


def test_accumulation_clipping_schedule_agree_with_the_reference(target, make_spec, runs, run_target,
                                                                   agreement_gaps):
    ref = run_target.reference_for(target)
    if ref is None:
        pytest.skip("needs a second target to compare with")
    result = runs(target)["agree"]
    if _refused(target, result, make_spec(AGREE)):
        return
    got, want = result.ok(), runs(ref)["agree"].ok()
    assert got.summary["global_step"] == want.summary["global_step"] == 16
    gap = float(np.max(np.abs(got.step_losses() - want.step_losses())))
    agreement_gaps.setdefault(target.name, {})["acc+clip+cosine"] = gap
    assert gap <= 1e-5, f"{target.name} vs {ref.name}: {gap:.2e}"
    assert [r["lr"] for r in got.rows] == [r["lr"] for r in want.rows]
    assert abs(got.metrics["val/loss"] - want.metrics["val/loss"]) <= 1e-5
