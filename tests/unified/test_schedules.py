"""unified.schedules (pure Python, used by Keras) against torch.optim.lr_scheduler, value for value."""

from __future__ import annotations

import math

import pytest

from unified.errors import SpecError
from unified.schedules import Schedule, plan_schedule, run_length
from unified.spec import load_spec

torch = pytest.importorskip("torch")

from unified.adapters.torch_common import make_scheduler  # noqa: E402


def _spec(scheduler: dict, trainer: dict | None = None, lr: float = 0.1):
    return load_spec({"data": {"source": "sklearn:iris"}, "optimizer": {"name": "sgd", "lr": lr},
                      "scheduler": scheduler, "trainer": trainer or {"max_epochs": 6}})


CASES = {
    "step": {"name": "step", "step_size": 3, "gamma": 0.5},
    "step-warmup": {"name": "step", "step_size": 4, "gamma": 0.7, "warmup_steps": 5, "interval": "step"},
    "cosine": {"name": "cosine", "interval": "step", "eta_min": 0.001},
    "cosine-tmax-short": {"name": "cosine", "interval": "step", "t_max": 7},  # goes past t_max: torch's cycle
    "cosine-warmup": {"name": "cosine", "interval": "step", "warmup_steps": 6, "warmup_start_factor": 0.01},
    "exponential": {"name": "exponential", "gamma": 0.93, "interval": "step"},
    "exponential-warmup": {"name": "exponential", "gamma": 0.9, "warmup_steps": 2},
    "onecycle-step": {"name": "onecycle", "interval": "step", "max_lr": 0.5, "pct_start": 0.25},
    "onecycle-epoch": {"name": "onecycle", "div_factor": 10.0, "final_div_factor": 100.0},
    "linear_warmup": {"name": "linear_warmup", "warmup_steps": 9, "interval": "step"},
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_lr_sequence_is_torchs(case):
    spec = _spec(CASES[case], {"max_epochs": 6, "accumulate_grad_batches": 2})
    plan = plan_schedule(spec, batches_per_epoch=7)  # 4 optimizer steps per epoch
    ours = Schedule(plan)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = make_scheduler(plan, opt)
    n = plan.total_steps if plan.name == "onecycle" else (24 if plan.interval == "step" else 6)
    assert n >= 6
    got, want = [ours.lr], [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        theirs.step()
        got.append(ours.step())
        want.append(opt.param_groups[0]["lr"])
    assert got == want  # bit-identical: the same float operations in the same order
    assert len(set(want)) > 2  # the schedule really moves


def test_reduce_on_plateau_is_torchs():
    spec = _spec({"name": "reduce_on_plateau", "patience": 1, "factor": 0.5, "cooldown": 1, "min_lr": 0.02})
    plan = plan_schedule(spec, 10)
    ours = Schedule(plan)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = make_scheduler(plan, opt)
    values = [1.0, 0.9, 0.95, 0.91, 0.9, 0.89999, 0.92, 0.93, 0.94, 0.8, 0.85, 0.86, 0.87, float("nan")]
    got, want = [], []
    for v in values:
        theirs.step(v)
        got.append(ours.step(v))
        want.append(opt.param_groups[0]["lr"])
    assert got == want
    assert min(want) == 0.02 and want[0] == 0.1


def test_state_dict_continues_exactly():
    plan = plan_schedule(_spec(CASES["cosine-warmup"]), 10)
    a = Schedule(plan)
    for _ in range(8):
        a.step()
    b = Schedule(plan)
    b.load_state_dict(a.state_dict())
    assert [a.step() for _ in range(10)] == [b.step() for _ in range(10)]


def test_defaults_come_from_the_run_length():
    spec = _spec({"name": "cosine", "interval": "step", "warmup_steps": 3},
                 {"max_epochs": 4, "accumulate_grad_batches": 3})
    assert run_length(spec, 10) == (4, 16)  # ceil(10 / 3) = 4 optimizer steps per epoch
    assert plan_schedule(spec, 10).t_max == 13
    one = plan_schedule(_spec({"name": "onecycle"}, {"max_steps": 25, "max_epochs": None}), 10)
    assert (one.total_steps, one.max_lr) == (3, 0.1)  # interval epoch: 3 epochs; peak = optimizer.lr
    with pytest.raises(SpecError, match="scheduler.warmup_steps"):
        plan_schedule(_spec({"name": "cosine", "warmup_steps": 6}), 10)
    with pytest.raises(SpecError, match="scheduler.t_max"):
        plan_schedule(_spec({"name": "cosine", "interval": "step"}), None)


@pytest.mark.parametrize("bad, where", [
    ({"name": "reduce_on_plateau", "interval": "step"}, "interval must be 'epoch'"),
    ({"name": "linear_warmup"}, "warmup_steps > 0"),
    ({"name": "onecycle", "warmup_steps": 3}, "does not combine"),
    ({"name": "cosine", "warmup_start_factor": 0}, "warmup_start_factor"),
])
def test_bad_combinations_are_spec_errors(bad, where):
    with pytest.raises(SpecError, match=where) as e:
        _spec(bad)
    assert "scheduler" in str(e.value)


def test_cosine_reaches_eta_min():
    plan = plan_schedule(_spec({"name": "cosine", "eta_min": 0.001}, {"max_epochs": 10}), 5)
    s = Schedule(plan)
    lrs = [s.step() for _ in range(10)]
    assert math.isclose(lrs[-1], 0.001, rel_tol=1e-9)
