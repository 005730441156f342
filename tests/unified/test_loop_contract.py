"""The loop contract's rules (unified.adapters.base), written once and used by every adapter."""

from __future__ import annotations

import math

import pytest

from unified.adapters.base import LoopPlan, SchedulerStepper, window_closes
from unified.schedules import plan_schedule
from unified.spec import Spec


def _plan(accumulate=1, batches=10, max_epochs=3, max_steps=None):
    return LoopPlan(accumulate, batches, max_epochs, max_steps)


def test_windows_close_every_nth_batch_and_at_the_epoch_end():
    p = _plan(accumulate=4, batches=10)
    assert [b for b in range(10) if p.closes(b)] == [3, 7, 9]  # 4 + 4 + a partial window of 2
    assert [b for b in range(10) if p.opens(b)] == [0, 4, 8]
    assert p.steps_per_epoch == 3
    assert all(_plan(accumulate=1).closes(b) for b in range(10))
    assert window_closes(10, 4, 10) and not window_closes(9, 4, 10) and window_closes(8, 4, None)


def test_global_step_counts_optimizer_steps_across_epochs():
    p = _plan(accumulate=4, batches=10)
    assert [p.global_step(n) for n in (0, 1, 4, 9, 10, 11, 20)] == [0, 1, 1, 3, 3, 4, 6]
    assert _plan(batches=None).global_step(7) == 7


@pytest.mark.parametrize("max_epochs, max_steps, batches, epochs, total", [
    (3, None, 10, 3, 30),
    (3, 25, 10, 3, 25),        # max_steps wins: ceil(25 / 10) epochs
    (None, 25, 10, 3, 25),     # max_epochs null: the steps alone decide
    (99, 5, 10, 1, 5),
    (2, 7, None, None, 7),     # a loader without len: unbounded epochs, max_steps ends the run
    (2, None, None, 2, None),
])
def test_run_length(max_epochs, max_steps, batches, epochs, total):
    p = _plan(batches=batches, max_epochs=max_epochs, max_steps=max_steps)
    assert (p.epochs, p.total_steps) == (epochs, total)
    assert p.reached(max_steps) if max_steps else not p.reached(10**9)


def test_of_reads_the_spec():
    spec = Spec(trainer={"max_epochs": None, "max_steps": 60, "accumulate_grad_batches": 2})
    p = LoopPlan.of(spec, 45)
    assert (p.accumulate, p.steps_per_epoch, p.epochs, p.total_steps) == (2, 23, 3, 60)


@pytest.mark.parametrize("scheduler, calls", [
    ({"name": "step", "interval": "step", "step_size": 1}, ["step", "step"]),
    ({"name": "step", "interval": "epoch", "step_size": 1}, ["epoch"]),
    ({"name": "reduce_on_plateau", "monitor": "val/loss"}, ["plateau:0.5"]),
])
def test_scheduler_steps_where_the_contract_says(scheduler, calls):
    spec = Spec(scheduler=scheduler)
    seen: list[str] = []
    plan = plan_schedule(spec, 10)
    stepper = SchedulerStepper(plan, lambda m: seen.append("plateau:%s" % m if m is not None else plan.interval))
    stepper.after_optimizer_step()
    stepper.after_optimizer_step()
    stepper.before_validation(full_epoch=False)  # an epoch cut short never steps an epoch scheduler
    stepper.before_validation(full_epoch=True)
    stepper.after_epoch_end({"val/loss": 0.5})
    assert seen == calls


def test_plateau_reads_nan_when_the_monitor_is_missing():
    stepper = SchedulerStepper(plan_schedule(Spec(scheduler={"name": "reduce_on_plateau"}), 10), lambda m: None)
    assert math.isnan(stepper.plateau_value({}))
    assert SchedulerStepper(None, lambda m: 1 / 0).per_step is False  # no scheduler: every call a no-op
