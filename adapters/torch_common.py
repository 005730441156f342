"""PyTorch pieces shared by the Lightning and Ignite adapters: model, loss, optimizer, data, weights.

Both trainers get the very same modules and loaders from here, which is why their per-step losses agree.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np

from unified.adapters.base import BackendAdapter, LoopPlan, SchedulerStepper
from unified.adapters.lightning_module import TrainingStepForward, user_steps
from unified.context import RunContext
from unified.data import Dataset, Split
from unified.devices import CPU, GpuProbe, Placement
from unified.errors import SpecError
from unified.models import ModelPlan, call_factory, import_target

try:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Sampler
except ImportError as e:  # pragma: no cover - the registry checks first; this is a second line
    from unified.errors import BackendUnavailableError

    raise BackendUnavailableError(f'PyTorch is not installed: pip install "unified-trainer[ignite]" ({e})') from e

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU,
}


class MLP(nn.Module):
    """The built-in ``mlp``: Linear -> activation -> Dropout, ..., Linear (state_dict keys ``layers.<i>.*``)."""

    def __init__(self, widths: list[int], activation: str, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        # The forward chain, built once (the same module objects: state_dict keys stay layers.<i>.*).
        chain: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            chain.append(layer)
            if i < len(self.layers) - 1:
                chain += [self.act] + ([self.drop] if self.drop is not None else [])
        self._chain = tuple(chain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self._chain:
            x = f(x)
        return x


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_model(ctx: RunContext) -> nn.Module:
    """The torch module for this run: the plan's MLP with its portable weights, or the user's module."""
    spec = ctx.spec
    seed_everything(spec.seed, spec.trainer.deterministic)
    if ctx.user_model is not None:
        model = ctx.user_model
    elif ctx.plan is not None:
        model = _from_plan(ctx.plan)
    else:
        assert ctx.dataset is not None
        fn = import_target(spec.model.factory, "model.factory")
        # A factory may build a Keras model (a torch.nn.Module on Keras's torch backend). Keras draws
        # its global seed from Python's `random` when first used, so seed that too, and reset Keras's
        # generator if it is loaded already: the same weights whether or not Keras was imported before.
        random.seed(spec.seed)
        if "keras" in sys.modules:
            sys.modules["keras"].utils.set_random_seed(spec.seed)
        model = call_factory(fn, in_features=ctx.dataset.in_features, out_features=ctx.dataset.out_features,
                             task=spec.task, kwargs=spec.model.kwargs,
                             in_shape=getattr(ctx.dataset, "sample_shape", None))
    if not isinstance(model, nn.Module):
        where = "the model passed to fit()" if ctx.user_model is not None else f"factory {spec.model.factory!r}"
        hint = ""
        if type(model).__module__.startswith("keras"):
            hint = (" (a Keras model is one only when Keras runs on its torch backend: set KERAS_BACKEND=torch "
                    "before keras is imported, or train it with backend keras)")
        raise SpecError(
            f"{where} returned {type(model).__module__}.{type(model).__name__}; backend {ctx.backend!r} trains a "
            f"torch.nn.Module{hint}",
            path=None if ctx.user_model is not None else "model.factory",
        )
    return model


def _from_plan(plan: Any) -> nn.Module:
    """The torch module of a built-in plan: the MLP, or an N-D arch (unified.adapters.torch_archs)."""
    if isinstance(plan, ModelPlan):
        model = MLP(plan.widths, plan.activation, plan.dropout)
        load_weights(model, plan.weights)
        return model
    from unified.adapters.torch_archs import build_torch

    return build_torch(plan)


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
    model.load_state_dict(state, strict=True)


class _Loss(nn.Module):
    """Loss with PyTorch's semantics; a ``[b, 1]`` output meets a ``[b]`` target by squeezing."""

    def __init__(self, name: str, reduction: str) -> None:
        super().__init__()
        self.name = name
        self.fn: Callable[..., torch.Tensor] = {
            "cross_entropy": nn.functional.cross_entropy,
            "bce_with_logits": nn.functional.binary_cross_entropy_with_logits,
            "mse": nn.functional.mse_loss,
            "mae": nn.functional.l1_loss,
            "huber": nn.functional.huber_loss,
        }[name]
        self.reduction = reduction
        self.per_sample = reduction == "sum" and name in ("mse", "mae", "huber", "bce_with_logits")

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.ndim == 2 and outputs.shape[1] == 1 and targets.ndim == 1:
            outputs = outputs.squeeze(1)
        if self.name != "cross_entropy" and targets.dtype != outputs.dtype:
            targets = targets.to(outputs.dtype)
        if self.reduction == "mean":
            return self.fn(outputs, targets)
        if not self.per_sample or outputs.ndim == 1:  # one value per sample already: the plain sum
            return self.fn(outputs, targets, reduction="sum")
        # "sum" of per-sample losses: for element-wise losses, average over a sample's outputs first,
        # so that sum / n equals the mean loss of the training objective.
        loss = self.fn(outputs, targets, reduction="none")
        if loss.ndim > 1:
            loss = loss.reshape(loss.shape[0], -1).mean(dim=1)
        return loss.sum()


def make_losses(name: str) -> tuple[nn.Module, nn.Module]:
    """(training loss, mean over the batch; evaluation loss, summed over samples)."""
    return _Loss(name, "mean"), _Loss(name, "sum")


def make_optimizer(opt: Any, params: Any) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.resolved_weight_decay)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                weight_decay=opt.resolved_weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                 weight_decay=opt.resolved_weight_decay)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=opt.lr, alpha=opt.alpha, eps=opt.eps, momentum=opt.momentum,
                                   weight_decay=opt.resolved_weight_decay)
    raise SpecError(f"unknown optimizer {opt.name!r}", path="optimizer.name")


def make_scheduler(plan: Any, optimizer: torch.optim.Optimizer) -> Any:
    """torch's scheduler for a resolved :class:`unified.schedules.SchedulePlan` (``None`` for no plan).

    ``unified.schedules`` repeats these classes in pure Python for Keras, in the same construction order.
    """
    if plan is None:
        return None
    from torch.optim import lr_scheduler as ls

    p = plan
    if p.name == "reduce_on_plateau":
        return ls.ReduceLROnPlateau(optimizer, mode=p.mode, factor=p.factor, patience=p.patience,
                                    threshold=p.threshold, threshold_mode="rel", cooldown=p.cooldown,
                                    min_lr=p.min_lr)
    if p.name == "onecycle":
        # cycle_momentum=False: the spec's momentum / beta1 stay fixed on every backend.
        return ls.OneCycleLR(optimizer, max_lr=p.max_lr, total_steps=p.total_steps, pct_start=p.pct_start,
                             anneal_strategy="cos", cycle_momentum=False, div_factor=p.div_factor,
                             final_div_factor=p.final_div_factor)
    if p.name == "linear_warmup":
        return ls.LinearLR(optimizer, start_factor=p.warmup_start_factor, end_factor=1.0, total_iters=p.warmup_steps)
    warmup = (ls.LinearLR(optimizer, start_factor=p.warmup_start_factor, end_factor=1.0, total_iters=p.warmup_steps)
              if p.warmup_steps else None)
    if p.name == "step":
        main = ls.StepLR(optimizer, step_size=p.step_size, gamma=p.gamma)
    elif p.name == "cosine":
        main = ls.CosineAnnealingLR(optimizer, T_max=p.t_max, eta_min=p.eta_min)
    elif p.name == "exponential":
        main = ls.ExponentialLR(optimizer, gamma=p.gamma)
    else:
        raise SpecError(f"unknown scheduler {p.name!r}", path="scheduler.name")
    if warmup is None:
        return main
    return ls.SequentialLR(optimizer, [warmup, main], milestones=[p.warmup_steps])


def autocast(precision: str, device_type: str = "cpu") -> Any:
    """The forward-pass context for ``trainer.precision`` on ``device_type`` (``cpu``/``cuda``): bf16 autocast,
    float16 autocast for ``16-mixed`` (a GPU only: ``unified.devices.select`` refuses it on the CPU), else a no-op."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type, dtype=torch.float16)
    return _NO_AUTOCAST


_NO_AUTOCAST = contextlib.nullcontext()  # reusable: the per-step path allocates nothing for precision 32


def clip_grad_norm(parameters: Any, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` (what Lightning's ``gradient_clip_algorithm="norm"`` calls)."""
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)


# -- placement: the device of a run (unified.devices decides; these act on it) -------------------------------
def torch_device(placement: Placement, local_rank: int = 0) -> torch.device:
    """The device this process trains on: ``cuda:<local_rank>`` on ``gpu`` (one GPU per rank), else the CPU."""
    return torch.device("cuda", local_rank) if placement.on_gpu else torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, or tuples/lists/dicts of them) on ``device``; asynchronous copies on CUDA."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def batch_mover(device: torch.device) -> Optional[Callable[[Any], Any]]:
    """What a loop applies to each batch, once: a copy to ``device``; ``None`` on the CPU (the loaders' tensors
    are there already, so the per-step path does nothing)."""
    if device.type == "cpu":
        return None
    return lambda batch: to_device(batch, device)


def grad_scaler(precision: str, device_type: str) -> Optional[Any]:
    """``torch.amp.GradScaler`` for ``16-mixed`` (float16 gradients need loss scaling), else ``None``."""
    return torch.amp.GradScaler(device_type) if precision == "16-mixed" else None


def backward(loss: torch.Tensor, scaler: Optional[Any]) -> None:
    """``loss.backward()``, through the loss scaler when there is one."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def optimizer_step(optimizer: Any, model: nn.Module, clip_norm: Optional[float], scaler: Optional[Any]) -> None:
    """Clip ``model``'s (unscaled) gradient and step the optimizer; with a loss scaler, ``scaler.step`` skips a
    step whose gradients overflowed and ``update`` adapts the scale (torch's AMP recipe)."""
    if scaler is None:
        if clip_norm is not None:
            clip_grad_norm(model.parameters(), clip_norm)
        optimizer.step()
        return
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        clip_grad_norm(model.parameters(), clip_norm)
    scaler.step(optimizer)
    scaler.update()


def ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(module)``: gradients averaged across ranks in backward (NCCL on CUDA, gloo on CPU)."""
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=device.index if ids else None)


def join_world(events: Any, placement: Placement = CPU) -> Any:
    """Join the job's process group when this process is one of several (``unified.distributed``).

    Returns the World. Makes ``events`` reduce what it logs across ranks (the mean train loss) and agree
    on stopping; each rank validates on the whole validation split, so validation metrics, and every
    decision taken from them, are the same on all ranks without a reduction. The group's collectives time
    out (``unified.distributed.timeout_s``), and SIGINT/SIGTERM stop every rank at the same batch boundary
    (:class:`_SignalAgreement`), so a checkpoint written on the way out meets no half-finished collective.
    The group talks over ``placement.dist_backend`` (NCCL between GPUs, one per rank; gloo on the CPU), and its
    small control tensors live where that backend wants them.
    """
    from unified.distributed import arm_watchdog, timeout_s, world_from_env

    world = world_from_env()
    if not world.distributed:
        return world
    import datetime

    import torch.distributed as dist

    arm_watchdog()  # a signal ends this rank even while a collective blocks the main thread
    device = torch_device(placement, world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL: this rank's GPU
    if not dist.is_initialized():  # Lightning's DDP strategy initialises it itself (with the same timeout)
        dist.init_process_group(placement.dist_backend, rank=world.rank, world_size=world.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s()))

    def mean(value: Any) -> Any:
        t = value.detach().float().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        t = t.to(device)
        dist.all_reduce(t)
        return t / world.world_size

    def any_rank(flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    events.reduce_mean, events.reduce_any = mean, any_rank
    _SignalAgreement(events, device)
    return world


class _SignalAgreement:
    """SIGINT/SIGTERM on any rank stops all ranks at the same optimizer step (or epoch end).

    A signal only notes itself here (the facade's guard calls :meth:`noted`). Each step's
    ``train_batch_end`` starts an asynchronous MAX all-reduce of the noted signal and reads the previous
    step's result, so every rank learns of a signal at the same boundary, one step later, without waiting
    on the network; ``epoch_end`` agrees with a blocking all-reduce. The agreed signal goes to
    ``events.request_interrupt``, and the loop contract does the rest (checkpoint, ``Interrupted``).
    """

    def __init__(self, events: Any, device: Any = None) -> None:
        import torch.distributed as dist

        self.dist, self.events, self.device = dist, events, device
        self.signum = 0
        self.work: Any = None
        self.buf: Any = None
        guard = getattr(events, "signal_guard", None)
        if guard is not None:
            guard.on_signal = self.noted
            guard.repeat_grace = 2.0  # the launcher forwards the terminal's Ctrl-C: not a second request
        self._batch_end, self._epoch_end = events.train_batch_end, events.epoch_end
        events.train_batch_end, events.epoch_end = self.train_batch_end, self.epoch_end

    def noted(self, signum: int) -> None:
        self.signum = max(self.signum, int(signum))

    def _previous(self) -> int:
        if self.work is None:
            return 0
        self.work.wait()
        self.work = None
        return int(self.buf.item())

    def train_batch_end(self, loss: Any, global_step: int, batch_idx: int) -> bool:
        agreed = self._previous()
        if agreed:
            self.events.request_interrupt(agreed)
        else:
            self.buf = torch.tensor([float(self.signum)], device=self.device)
            self.work = self.dist.all_reduce(self.buf, op=self.dist.ReduceOp.MAX, async_op=True)
        return self._batch_end(loss, global_step, batch_idx)

    def epoch_end(self, val_metrics: Any) -> bool:
        agreed = self._previous()
        if not agreed:
            t = torch.tensor([float(self.signum)], device=self.device)
            self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
            agreed = int(t.item())
        if agreed:
            self.events.request_interrupt(agreed)
        return self._epoch_end(val_metrics)


def shard(idx: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s part of one global batch: contiguous, sizes differing by at most one.

    A global batch smaller than the world (a tiny last batch) is repeated so every rank gets a sample,
    as torch's DistributedSampler pads.
    """
    if len(idx) < world_size:
        idx = np.resize(idx, world_size)
    return np.array_split(idx, world_size)[rank]


def _model_input(x: np.ndarray) -> np.ndarray:
    """Contiguous float32 model input; integer token ids stay int64 (embedding lookups)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x, dtype=np.int64 if x.dtype == np.int64 else np.float32)


class _SplitTensors(torch.utils.data.Dataset):
    """A split held as two tensors; indexed by a whole batch of indices at once (no per-sample collate)."""

    def __init__(self, split: Split) -> None:
        self.x = torch.from_numpy(_model_input(split.x))
        self.y = torch.from_numpy(np.ascontiguousarray(split.y))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


class CanonicalBatchSampler(Sampler):
    """Yields the canonical batches of each epoch (``Dataset.epoch_batches``), as index tensors.

    The epoch is set by the trainer (``set_epoch``, 0-based: Lightning calls it itself, the Ignite
    adapter from ``EPOCH_STARTED``); each new iterator also advances it, so either way is exact.
    """

    def __init__(self, dataset: Dataset, start_epoch: int = 0) -> None:
        from unified.distributed import world_from_env

        self.dataset = dataset
        self._next_epoch = start_epoch
        self._skip: Optional[tuple[int, int]] = None
        world = world_from_env()  # several processes: each takes its part of every global batch
        self._rank, self._world_size = world.rank, world.world_size

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start at 0-based ``epoch``, leaving out its first ``skip`` batches (done before a checkpoint).

        ``len()`` stays the full epoch: the trainers count the skipped batches as done (Lightning's
        restored batch progress, Ignite's restored iteration).
        """
        self._next_epoch = epoch
        self._skip = (epoch, skip) if skip else None

    def epoch_plan(self) -> tuple[int, list[np.ndarray]]:
        """``(0-based epoch, this process's batches of it)`` for the next pass; advances the epoch."""
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        batches = self.dataset.epoch_batches(epoch)
        if self._skip is not None:
            if self._skip[0] == epoch:
                batches = batches[self._skip[1]:]
            self._skip = None
        if self._world_size > 1:
            batches = [shard(idx, self._rank, self._world_size) for idx in batches]
        return epoch, batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        _, batches = self.epoch_plan()
        for idx in batches:
            yield torch.from_numpy(idx)

    def __len__(self) -> int:
        return self.dataset.steps_per_epoch()


class _SequentialBatches(Sampler):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self.indices = batches
        self.batches = [torch.from_numpy(b) for b in batches]

    def epoch_plan(self) -> tuple[int, list[np.ndarray]]:
        return 0, self.indices

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _FetchedBatches:
    """A split whose batches ``Dataset.iter_batches`` reads (memory map, image files, augmented train split),
    as tensors, in the sampler's order; ``data.num_workers`` processes fetch ahead.

    Iterated like a DataLoader over the same samplers: ``sampler`` sets the epoch (``set_epoch``) and the
    resume point, and each pass takes the sampler's next ``epoch_plan()``.
    """

    batch_sampler = None  # as a DataLoader(batch_size=None): Lightning looks for both samplers

    def __init__(self, dataset: Dataset, split: str, sampler: Any) -> None:
        self.dataset, self.split, self.sampler = dataset, split, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, batches = self.sampler.epoch_plan()
        for x, y in self.dataset.iter_batches(self.split, batches, epoch):
            yield torch.from_numpy(x), torch.from_numpy(y)


def train_loader(ctx: RunContext) -> Any:
    if ctx.user_loaders:
        return ctx.user_loaders["train"]
    assert ctx.dataset is not None
    sampler = CanonicalBatchSampler(ctx.dataset)
    if not ctx.dataset.train.in_memory:  # fetched per batch: memory map, image files, augmentation
        return _FetchedBatches(ctx.dataset, "train", sampler)
    return DataLoader(_SplitTensors(ctx.dataset.train), sampler=sampler, batch_size=None, num_workers=0)


def eval_loader(ctx: RunContext, split: str = "val") -> Optional[Any]:
    if ctx.user_loaders:
        return ctx.user_loaders.get(split)
    assert ctx.dataset is not None
    data = getattr(ctx.dataset, split)
    if data is None:
        return None
    sampler = _SequentialBatches(ctx.dataset.eval_batches(split))
    if not data.in_memory:
        return _FetchedBatches(ctx.dataset, split, sampler)
    return DataLoader(_SplitTensors(data), sampler=sampler, batch_size=None, num_workers=0)


def unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a batch: a pair, or a dict with x/y (or input/target) keys."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "targets"), ("features", "label")):
            if xk in batch and yk in batch:
                return batch[xk], batch[yk]
    raise SpecError(f"a training batch must be (x, y) or a dict with 'x' and 'y', got {type(batch).__name__}")


def eval_batch(model: nn.Module, loss_sum: nn.Module, batch: Any, acc: Any,
               move: Optional[Callable[[Any], Any]] = None) -> None:
    """Forward one evaluation batch (moved by ``move``, see :func:`batch_mover`) and feed the shared numpy
    metrics (eval mode, no grad)."""
    x, y = unpack(batch if move is None else move(batch))
    with torch.no_grad():
        out = model(x)
        total = loss_sum(out, y)
    acc.update(out.detach().float().cpu().numpy(), y.detach().cpu().numpy(), float(total), int(y.shape[0]))


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024, device: Optional[torch.device] = None) -> np.ndarray:
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(_model_input(x[start:start + batch_size]))
            if device is not None:
                chunk = chunk.to(device)
            outs.append(model(chunk).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)


def pack_run_state(run_state: dict[str, Any]) -> dict[str, Any]:
    """The facade's run state as JSON text + tensors (loadable with ``torch.load(weights_only=True)``)."""
    from unified.resume import pack_state

    text, arrays = pack_state(run_state)
    return {"meta": text, "arrays": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
            "torch_rng": torch.get_rng_state()}


def unpack_run_state(blob: Any, path: Any) -> dict[str, Any]:
    from unified.resume import unpack_state

    if not isinstance(blob, dict) or "meta" not in blob:
        raise SpecError(f"--resume {path}: the checkpoint holds no unified-trainer run state")
    return unpack_state(blob["meta"], {k: v.numpy() for k, v in blob.get("arrays", {}).items()})


def load_torch_checkpoint(path: Any, kind: str) -> Any:
    """``torch.load`` a checkpoint safely (``weights_only``); a foreign or corrupt file is a SpecError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user input problem here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"--resume {path}: not a {kind} checkpoint written by unified-trainer ({first})") from None


def start_sampler_at(loader: Any, run_state: dict[str, Any], steps_per_epoch: Optional[int],
                     accumulate: int = 1) -> tuple[int, int]:
    """Point the canonical sampler at the checkpoint's place in the batch order.

    ``steps_per_epoch`` counts optimizer steps; returns ``(0-based epoch, optimizer steps of it done)``.
    """
    from unified.resume import resume_position

    epoch0, done = resume_position(run_state, steps_per_epoch)
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, CanonicalBatchSampler):
        sampler.resume_at(epoch0, min(done * accumulate, len(sampler)))
    return epoch0, done


class TorchAdapter(BackendAdapter):
    """What the two torch trainers share: model, losses, weights, prediction and evaluation."""

    exporter = "unified.adapters.export_torch"
    export_formats = frozenset({"onnx", "torchscript"})

    @classmethod
    def gpu_probe(cls, spec: Any) -> GpuProbe:
        """The CUDA GPUs torch sees (``torch.cuda.device_count()``)."""
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return GpuProbe(n, "torch", "torch.cuda.device_count()", "torch.cuda.is_available() is False")

    def __init__(self, ctx: RunContext) -> None:
        from unified.distributed import world_from_env

        super().__init__(ctx)
        # Where it trains (unified.devices): the model once, here, before any optimizer sees its parameters;
        # each batch once per step (self.move, None on the CPU); the loss scaler of 16-mixed (on a GPU).
        self.placement = self.select_placement(ctx.spec)
        self.device = torch_device(self.placement, world_from_env().local_rank)
        self.move = batch_mover(self.device)
        self.scaler = grad_scaler(ctx.spec.trainer.precision, self.device.type)
        self.model = build_model(ctx).to(self.device)
        self._train_forward: Optional[tuple[Any, Any]] = None
        self.loss_fn, self.loss_sum = make_losses(ctx.spec.resolved_loss())
        self.optimizer: Optional[torch.optim.Optimizer] = None
        # A user's LightningModule brings its own training_step / configure_optimizers (adapters/lightning_module.py).
        self.steps = user_steps(self.model) if ctx.user_model is not None else None
        # Schedule, accumulation and precision (docs/semantics.md): the torch scheduler (checkpointed with
        # the optimizer), the lr the last optimizer step used (what `lr` logs), the open accumulation window.
        self.scheduler: Any = None
        self.schedule_plan: Any = None
        self.step_lr: Optional[float] = None
        self.precision = ctx.spec.trainer.precision
        from unified.schedules import check_monitor_available, plan_schedule

        # Resolved (and checked) here, before anything trains; the torch scheduler is built on the optimizer.
        self.loop = LoopPlan.of(ctx.spec, self.batches_per_epoch())
        self.schedule_plan = plan_schedule(ctx.spec, self.loop.batches_per_epoch)
        check_monitor_available(self.schedule_plan, ctx.has_val)
        self.stepper = SchedulerStepper(self.schedule_plan, self._step_scheduler)

    def batches_per_epoch(self) -> Optional[int]:
        """Micro-batches per epoch (``None`` for a native loader without ``len``)."""
        if self.ctx.dataset is not None:
            return self.ctx.dataset.steps_per_epoch()
        loader = self.ctx.user_loaders.get("train")
        try:
            return len(loader)  # type: ignore[arg-type]
        except TypeError:
            return None

    def _step_scheduler(self, metric: Optional[float]) -> None:
        if metric is None:
            self.scheduler.step()
        else:
            self.scheduler.step(metric)

    def new_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """Build ``self.scheduler`` (torch's, for ``spec.scheduler``) on ``optimizer``; ``None`` without one."""
        self.scheduler = make_scheduler(self.schedule_plan, optimizer)
        return self.scheduler

    def new_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The user's LightningModule's ``configure_optimizers()`` optimizer, else the spec's."""
        user = self.steps.optimizer() if self.steps is not None else None
        return user if user is not None else make_optimizer(self.ctx.spec.optimizer, params)

    def user_step_loss(self) -> Optional[Callable[[Any, int], torch.Tensor]]:
        """``(batch, batch_idx) -> loss`` of a user's LightningModule ``training_step`` (None: the spec's loss)."""
        return self.steps.training_loss if self.steps is not None and self.steps.has_training_step else None

    def train_forward(self) -> tuple[Any, Optional[Callable[[Any, int], torch.Tensor]]]:
        """``(model, user_step)`` a torch loop trains through: the model the spec's loss is computed on, and a
        user's ``training_step`` (or ``None``); built once per run.

        Several processes (``self.world``, set by :func:`join_world`): whatever runs the forward pass is wrapped
        in ``DistributedDataParallel`` and called through it, because DDP arms its gradient all-reduce in its
        own ``forward``: the model, or, for a user's ``training_step``, a module whose ``forward`` is that step
        (as Lightning's ``_LightningModuleWrapperBase``). Called on the bare module, the ranks' gradients would
        never be averaged and their weights would drift apart.
        """
        if self._train_forward is None:
            model, user_step = self.model, self.user_step_loss()
            if getattr(self, "world", None) is not None and self.world.distributed:
                if user_step is None:
                    model = ddp(model, self.device)
                else:
                    user_step = ddp(TrainingStepForward(self.steps), self.device)
            self._train_forward = (model, user_step)
        return self._train_forward

    def current_lr(self) -> float:
        """The lr of the last optimizer step (before the scheduler moved it), else the optimizer's."""
        if self.step_lr is not None:
            return float(self.step_lr)
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else float("nan")

    def load_training_state(self, payload: dict[str, Any]) -> None:
        """Model, optimizer and scheduler state and the torch RNG from a checkpoint dict of state_dicts."""
        try:
            self.model.load_state_dict(payload["model"])
            if "optimizer" in payload:
                self.optimizer.load_state_dict(payload["optimizer"])  # type: ignore[union-attr]
        except (RuntimeError, ValueError, KeyError) as e:
            raise SpecError(f"--resume: the checkpoint does not fit this model/optimizer: "
                            f"{str(e).strip().splitlines()[0]}") from None
        if self.scheduler is not None and "scheduler" in payload:
            self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and "scaler" in payload:
            self.scaler.load_state_dict(payload["scaler"])
        if "torch_rng" in payload["unified"]:
            torch.set_rng_state(payload["unified"]["torch_rng"])

    def evaluate(self, split: str = "val") -> dict[str, float]:
        loader = eval_loader(self.ctx, split)
        if loader is None:
            return {}
        acc = self.ctx.accumulator(split)
        was_training = self.model.training
        self.model.eval()
        with autocast(self.precision, self.device.type):
            for batch in loader:
                eval_batch(self.model, self.loss_sum, batch, acc, self.move)
        self.model.train(was_training)
        return acc.compute()

    def predict(self, x: np.ndarray) -> np.ndarray:
        with autocast(self.precision, self.device.type):
            return predict(self.model, x, device=self.device)

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_weights(self.model)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        load_weights(self.model, weights)

    def native_model(self) -> Any:
        return self.model
