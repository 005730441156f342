"""Cross-backend agreement: the same spec and seed give the same training on every target.

Every target (each installed backend, and Keras on each importable tensor backend) is compared with the
reference (ignite; ignite itself with the plain torch loop): per-step train/loss, final val/loss, and the
metrics.csv layout. Keras fixes its tensor backend per process, so the targets this process cannot host
train in subprocesses; all of a target's runs share one (``run_target_shared``).
"""

from __future__ import annotations

import numpy as np
import pytest

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"name": "adam", "lr": 0.003},
    "adamw": {"name": "adamw", "lr": 0.003},
}
EPOCHS, STEPS_PER_EPOCH = 3, 45  # digits: 1438 train samples / batch 32
CSV_CHANGES = {"trainer": {"max_epochs": 2, "max_steps": 70},
               "callbacks": [{"early_stopping": {"monitor": "val/accuracy", "mode": "max"}}]}


@pytest.fixture
def agreement(make_spec, run_target_shared):
    """target name -> {case: RunResult}: every target's runs, trained once for the session (the subprocess
    targets start first and train while the in-process ones do)."""
    Job = run_target_shared.Job
    jobs = []
    for t in run_target_shared.targets:
        for name, opt in OPTIMIZERS.items():
            jobs.append(Job(t, make_spec({"optimizer": opt, "trainer": {"max_epochs": EPOCHS, "log_every_n_steps": 1}}),
                            name=name))
        jobs.append(Job(t, make_spec(CSV_CHANGES), name="csv"))
    for j in jobs:
        j.spec.pop("logging")  # the shared runner's own directory, not this test's tmp_path
    runs = run_target_shared.many(jobs)
    return {t.name: {j.name: runs[f"{t.name}/{j.name}"] for j in jobs if j.target == t}
            for t in run_target_shared.targets}


def _reference(run_target, target):
    ref = run_target.reference_for(target)
    if ref is None:
        pytest.skip("needs a second target to compare with")
    return ref


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_per_step_loss_agrees_with_the_reference(target, optimizer, agreement, agreement_gaps, run_target):
    ref = _reference(run_target, target)
    want = agreement[ref.name][optimizer].ok()
    got = agreement[target.name][optimizer].ok()
    assert [r["step"] for r in got.step_rows()] == [str(s) for s in range(1, EPOCHS * STEPS_PER_EPOCH + 1)]
    assert len(want.step_losses()) == EPOCHS * STEPS_PER_EPOCH
    gap = float(np.max(np.abs(got.step_losses() - want.step_losses())))
    agreement_gaps.setdefault(target.name, {})[optimizer] = gap
    assert gap <= 1e-5, f"{target.name} vs {ref.name}: per-step train/loss differs by {gap:.2e}"
    assert abs(got.metrics["val/loss"] - want.metrics["val/loss"]) <= 1e-5


def test_same_csv_columns_and_rows(target, agreement, run_target):
    ref = _reference(run_target, target)
    want = agreement[ref.name]["csv"].ok()
    got = agreement[target.name]["csv"].ok()
    assert got.summary["global_step"] == 70 and got.summary["epochs"] == 2
    assert got.columns == want.columns, f"{target.name} metrics.csv columns differ from {ref.name}"
    assert [(r["epoch"], r["step"]) for r in got.rows] == [(r["epoch"], r["step"]) for r in want.rows]
