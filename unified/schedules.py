"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s exact arithmetic, in pure Python.

The torch trainers use torch's own schedulers (``adapters/torch_common.make_scheduler``); Keras sets its
optimizer's learning rate from a :class:`Schedule` built here. Each class below repeats its torch
counterpart operation by operation (the recursive forms included, e.g. ``CosineAnnealingLR``'s chained
update, ``SequentialLR``'s reset at a milestone), on one parameter group held as a dict, so the lr
sequence is bit-identical to torch's (tests/unified/test_schedules.py pins it).

:func:`plan_schedule` resolves a spec's ``scheduler`` section into concrete parameters (``t_max``,
``total_steps``, ``max_lr`` filled in from the run length) once, for every backend.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from dataclasses import asdict, dataclass
from typing import Any, Optional

from unified.errors import SpecError

__all__ = ["SchedulePlan", "Schedule", "plan_schedule", "run_length", "optimizer_steps_per_epoch",
           "check_monitor_available"]


def optimizer_steps_per_epoch(batches_per_epoch: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of ``batches_per_epoch`` batches (the last window may be partial)."""
    return -(-int(batches_per_epoch) // int(accumulate))


def run_length(spec: Any, batches_per_epoch: Optional[int]) -> tuple[Optional[int], Optional[int]]:
    """``(epochs, optimizer steps)`` the run will take (``None`` where the length of the data is unknown)."""
    tr = spec.trainer
    spe = optimizer_steps_per_epoch(batches_per_epoch, tr.accumulate_grad_batches) if batches_per_epoch else None
    if tr.max_steps is not None:
        return (-(-tr.max_steps // spe) if spe else None), tr.max_steps
    return tr.max_epochs, (tr.max_epochs * spe if spe else None)


@dataclass(frozen=True)
class SchedulePlan:
    """A spec's schedule with every derived value resolved (the same on every backend)."""

    name: str
    interval: str
    base_lr: float
    step_size: int = 10
    gamma: float = 0.1
    t_max: Optional[int] = None
    eta_min: float = 0.0
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    mode: str = "min"
    monitor: str = "val/loss"
    max_lr: Optional[float] = None
    total_steps: Optional[int] = None
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    warmup_steps: int = 0
    warmup_start_factor: float = 1.0 / 3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_schedule(spec: Any, batches_per_epoch: Optional[int]) -> Optional[SchedulePlan]:
    """Resolve ``spec.scheduler`` for a run whose epochs have ``batches_per_epoch`` batches.

    ``cosine``'s ``t_max`` defaults to the run's length in ``interval`` units minus ``warmup_steps``;
    ``onecycle``'s ``total_steps`` to the run's length and its ``max_lr`` to ``optimizer.lr``.

    Raises:
        SpecError: a default needs the run length and the data's length is unknown (native loaders
            without ``len``), or the warm-up is not shorter than the run.
    """
    s = spec.scheduler
    if s is None:
        return None
    epochs, steps = run_length(spec, batches_per_epoch)
    length = steps if s.interval == "step" else epochs
    t_max, total = s.t_max, s.total_steps
    if s.name == "cosine" and t_max is None:
        if length is None:
            raise SpecError("cosine needs t_max when the number of batches per epoch is unknown", path="scheduler.t_max")
        t_max = length - s.warmup_steps
        if t_max <= 0:
            raise SpecError(f"warmup_steps ({s.warmup_steps}) must be shorter than the run ({length} "
                            f"{s.interval}s)", path="scheduler.warmup_steps")
    if s.name == "onecycle" and total is None:
        if length is None:
            raise SpecError("onecycle needs total_steps when the number of batches per epoch is unknown",
                            path="scheduler.total_steps")
        total = length
    fields = s.model_dump()
    fields.update(t_max=t_max, total_steps=total, base_lr=float(spec.optimizer.lr),
                  max_lr=float(s.max_lr if s.max_lr is not None else spec.optimizer.lr))
    return SchedulePlan(**fields)


def check_monitor_available(plan: Optional[SchedulePlan], has_val: bool) -> None:
    """reduce_on_plateau on a ``val/`` key needs validation data: say so before training starts."""
    if plan is not None and plan.name == "reduce_on_plateau" and plan.monitor.startswith("val/") and not has_val:
        raise SpecError(f"reduce_on_plateau monitors {plan.monitor!r}, but the run has no validation data "
                        f"(set data.val_fraction > 0, pass validation data, or monitor train/loss_epoch)",
                        path="scheduler.monitor")


# -- torch's schedulers, one parameter group --------------------------------------------------------

class _LR:
    """``torch.optim.lr_scheduler.LRScheduler`` on one param group (``{"lr", "initial_lr", ...}``)."""

    _is_initial = False

    def __init__(self, group: dict[str, float]) -> None:
        self.group = group
        group.setdefault("initial_lr", group["lr"])
        self.base_lr = group["initial_lr"]
        self.last_epoch = -1
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: Optional[int]) -> None:
        if epoch is None:
            self.last_epoch += 1
            lr = self.get_lr()
        else:
            self.last_epoch = epoch
            lr = self.closed_form() if hasattr(self, "closed_form") else self.get_lr()
        self.group["lr"] = lr

    def get_lr(self) -> float:
        raise NotImplementedError


class _StepLR(_LR):
    def __init__(self, group: dict[str, float], step_size: int, gamma: float) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(group)

    def get_lr(self) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.group["lr"]
        return self.group["lr"] * self.gamma

    def closed_form(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class _CosineAnnealingLR(_LR):
    def __init__(self, group: dict[str, float], t_max: int, eta_min: float) -> None:
        self.T_max, self.eta_min = t_max, eta_min
        super().__init__(group)

    def get_lr(self) -> float:
        lr, base, t, e = self.group["lr"], self.base_lr, self.T_max, self.eta_min
        if self._is_initial:
            return lr
        if self._step_count == 1 and self.last_epoch > 0:
            return e + (base - e) * (1 + math.cos(self.last_epoch * math.pi / t)) / 2
        if (self.last_epoch - 1 - t) % (2 * t) == 0:
            return lr + (base - e) * (1 - math.cos(math.pi / t)) / 2
        return ((1 + math.cos(math.pi * self.last_epoch / t)) / (1 + math.cos(math.pi * (self.last_epoch - 1) / t))
                * (lr - e) + e)

    def closed_form(self) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class _ExponentialLR(_LR):
    def __init__(self, group: dict[str, float], gamma: float) -> None:
        self.gamma = gamma
        super().__init__(group)

    def get_lr(self) -> float:
        if self._is_initial:
            return self.group["lr"]
        return self.group["lr"] * self.gamma

    def closed_form(self) -> float:
        return self.base_lr * self.gamma ** self.last_epoch


class _LinearLR(_LR):
    def __init__(self, group: dict[str, float], start_factor: float, total_iters: int,
                 end_factor: float = 1.0) -> None:
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(group)

    def get_lr(self) -> float:
        lr = self.group["lr"]
        if self.last_epoch == 0:
            return lr * self.start_factor
        if self._is_initial or self.last_epoch > self.total_iters:
            return lr
        return lr * (1.0 + (self.end_factor - self.start_factor)
                     / (self.total_iters * self.start_factor
                        + (self.last_epoch - 1) * (self.end_factor - self.start_factor)))

    def closed_form(self) -> float:
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                               * min(self.total_iters, self.last_epoch) / self.total_iters)


class _OneCycleLR(_LR):
    """``OneCycleLR`` with ``anneal_strategy='cos'``, ``three_phase=False``, ``cycle_momentum=False``."""

    def __init__(self, group: dict[str, float], max_lr: float, total_steps: int, pct_start: float,
                 div_factor: float, final_div_factor: float) -> None:
        self.total_steps = total_steps
        self.phases = [
            (float(pct_start * total_steps) - 1, "initial_lr", "max_lr"),
            (total_steps - 1, "max_lr", "min_lr"),
        ]
        group["initial_lr"] = max_lr / div_factor
        group["max_lr"] = max_lr
        group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(group)

    def get_lr(self) -> float:
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total steps is "
                             f"{self.total_steps}")
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(self.phases):
            if step_num <= end_step or i == len(self.phases) - 1:
                pct = (step_num - start_step) / (end_step - start_step)
                a, b = self.group[start], self.group[end]
                return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
            start_step = end_step
        raise AssertionError("unreachable")


class _SequentialLR:
    """``SequentialLR(optimizer, schedulers, milestones)`` (constructed after its schedulers, as in torch)."""

    def __init__(self, group: dict[str, float], schedulers: list[_LR], milestones: list[int]) -> None:
        self.group, self.schedulers, self.milestones = group, schedulers, milestones
        self.last_epoch = 0
        group["lr"] = group["initial_lr"]
        for s in schedulers:  # undo the schedulers' own initial steps
            s.last_epoch -= 1
        schedulers[bisect_right(milestones, 0)]._initial_step()

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self.milestones, self.last_epoch)
        sched = self.schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            sched._update_lr(0)
        else:
            sched.step()


class _ReduceLROnPlateau:
    """``ReduceLROnPlateau`` (``threshold_mode='rel'``, ``eps=1e-8``)."""

    def __init__(self, group: dict[str, float], mode: str, factor: float, patience: int, threshold: float,
                 cooldown: int, min_lr: float) -> None:
        self.group = group
        self.mode, self.factor, self.patience, self.threshold = mode, factor, patience, threshold
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, 1e-8
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < best * (1.0 - self.threshold)
        return a > best * (self.threshold + 1.0)

    def step(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.group["lr"])
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0


def _build(plan: SchedulePlan, group: dict[str, float]) -> Any:
    p = plan
    if p.name == "reduce_on_plateau":
        return _ReduceLROnPlateau(group, p.mode, p.factor, p.patience, p.threshold, p.cooldown, p.min_lr)
    if p.name == "onecycle":
        assert p.total_steps is not None and p.max_lr is not None
        return _OneCycleLR(group, p.max_lr, p.total_steps, p.pct_start, p.div_factor, p.final_div_factor)
    if p.name == "linear_warmup":
        return _LinearLR(group, p.warmup_start_factor, p.warmup_steps)
    warmup = _LinearLR(group, p.warmup_start_factor, p.warmup_steps) if p.warmup_steps else None
    if p.name == "step":
        main: _LR = _StepLR(group, p.step_size, p.gamma)
    elif p.name == "cosine":
        assert p.t_max is not None
        main = _CosineAnnealingLR(group, p.t_max, p.eta_min)
    elif p.name == "exponential":
        main = _ExponentialLR(group, p.gamma)
    else:
        raise SpecError(f"unknown scheduler {p.name!r}", path="scheduler.name")
    if warmup is None:
        return main
    return _SequentialLR(group, [warmup, main], [p.warmup_steps])


class Schedule:
    """A framework-free learning-rate schedule: torch's scheduler for ``plan``, on a plain float lr.

    Args:
        plan: from :func:`plan_schedule`.

    Example:
        >>> s = Schedule(plan)       # s.lr is the lr of the first step
        >>> s.step()                 # after an optimizer step (interval step) or an epoch
        >>> s.step(metric=0.42)      # reduce_on_plateau: the monitored value
    """

    def __init__(self, plan: SchedulePlan) -> None:
        self.plan = plan
        self.group: dict[str, float] = {"lr": float(plan.base_lr)}
        self._sched = _build(plan, self.group)

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        return self.group["lr"]

    @property
    def interval(self) -> str:
        return self.plan.interval

    @property
    def needs_metric(self) -> bool:
        return self.plan.name == "reduce_on_plateau"

    def step(self, metric: Optional[float] = None) -> float:
        """Advance by one interval and return the new lr (``metric`` only for reduce_on_plateau)."""
        if self.needs_metric:
            if metric is None:
                raise ValueError("reduce_on_plateau steps on a metric value")
            self._sched.step(metric)
        else:
            self._sched.step()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule exactly (plain Python values)."""
        return {"plan": self.plan.as_dict(), "state": _state(self._sched)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same plan)."""
        _load(self._sched, copy.deepcopy(state["state"]), self.group)


def _state(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        if k == "group":
            out[k] = dict(v)
        elif k == "schedulers":
            out[k] = [_state(s) for s in v]
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load(obj: Any, state: dict[str, Any], group: dict[str, float]) -> None:
    for k, v in state.items():
        if k == "group":
            group.clear()
            group.update(v)
        elif k == "schedulers":
            for s, sv in zip(obj.schedulers, v):
                _load(s, sv, group)
        else:
            setattr(obj, k, v)
