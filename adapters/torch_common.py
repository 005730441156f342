"""PyTorch pieces shared by the Lightning and Ignite adapters: model, loss, optimizer, data, weights.

Both trainers get the very same modules and loaders from here, which is why their per-step losses agree.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np

from adapters.base import BackendAdapter
from unified.context import RunContext
from unified.data import Dataset, Split
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
                if self.drop is not None:
                    x = self.drop(x)
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
                             task=spec.task, kwargs=spec.model.kwargs)
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


def _from_plan(plan: ModelPlan) -> nn.Module:
    model = MLP(plan.widths, plan.activation, plan.dropout)
    load_weights(model, plan.weights)
    return model


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


class _SplitTensors(torch.utils.data.Dataset):
    """A split held as two tensors; indexed by a whole batch of indices at once (no per-sample collate)."""

    def __init__(self, split: Split) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(split.x, dtype=np.float32))
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
        self.dataset = dataset
        self._next_epoch = start_epoch

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        for idx in self.dataset.epoch_batches(epoch):
            yield torch.from_numpy(idx)

    def __len__(self) -> int:
        return self.dataset.steps_per_epoch()


class _SequentialBatches(Sampler):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = [torch.from_numpy(b) for b in batches]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def train_loader(ctx: RunContext) -> Any:
    if ctx.user_loaders:
        return ctx.user_loaders["train"]
    assert ctx.dataset is not None
    return DataLoader(_SplitTensors(ctx.dataset.train), sampler=CanonicalBatchSampler(ctx.dataset),
                      batch_size=None, num_workers=0)


def eval_loader(ctx: RunContext, split: str = "val") -> Optional[Any]:
    if ctx.user_loaders:
        return ctx.user_loaders.get(split)
    assert ctx.dataset is not None
    data = getattr(ctx.dataset, split)
    if data is None:
        return None
    return DataLoader(_SplitTensors(data), sampler=_SequentialBatches(ctx.dataset.eval_batches(split)),
                      batch_size=None, num_workers=0)


def unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a batch: a pair, or a dict with x/y (or input/target) keys."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "targets"), ("features", "label")):
            if xk in batch and yk in batch:
                return batch[xk], batch[yk]
    raise SpecError(f"a training batch must be (x, y) or a dict with 'x' and 'y', got {type(batch).__name__}")


def eval_batch(model: nn.Module, loss_sum: nn.Module, batch: Any, acc: Any) -> None:
    """Forward one evaluation batch and feed the shared numpy metrics (eval mode, no grad)."""
    x, y = unpack(batch)
    with torch.no_grad():
        out = model(x)
        total = loss_sum(out, y)
    acc.update(out.detach().float().cpu().numpy(), y.detach().cpu().numpy(), float(total), int(y.shape[0]))


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32))
            outs.append(model(chunk).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)


class TorchAdapter(BackendAdapter):
    """What the two torch trainers share: model, losses, weights, prediction and evaluation."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.model = build_model(ctx)
        self.loss_fn, self.loss_sum = make_losses(ctx.spec.resolved_loss())
        self.optimizer: Optional[torch.optim.Optimizer] = None

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else float("nan")

    def evaluate(self, split: str = "val") -> dict[str, float]:
        loader = eval_loader(self.ctx, split)
        if loader is None:
            return {}
        acc = self.ctx.accumulator(split)
        was_training = self.model.training
        self.model.eval()
        for batch in loader:
            eval_batch(self.model, self.loss_sum, batch, acc)
        self.model.train(was_training)
        return acc.compute()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict(self.model, x)

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_weights(self.model)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        load_weights(self.model, weights)

    def native_model(self) -> Any:
        return self.model
