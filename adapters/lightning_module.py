"""A user's own ``LightningModule`` trained by a torch backend (Lightning or Ignite).

Its ``training_step`` gives the training loss and its ``configure_optimizers`` the optimizer, on both
trainers, so code migrated from Lightning keeps its own loss and optimizer. Validation, logging and
metrics stay the facade's: ``forward`` outputs are scored with the spec's loss and metrics, so
``val/*`` means the same on every backend (``self.log`` calls inside the steps are not needed and are
ignored outside a Lightning run).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Optional

import torch

from unified.errors import NotSupportedError

_LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning.pytorch")


def _lightning_module_classes() -> list[type]:
    # Only what is imported already: a model of a package that is not loaded cannot be an instance of it.
    return [mod.LightningModule for name in _LIGHTNING_PACKAGES
            if (mod := sys.modules.get(name)) is not None and hasattr(mod, "LightningModule")]


def is_lightning_module(model: Any) -> bool:
    """True when ``model`` is a ``LightningModule`` of ``pytorch_lightning`` or ``lightning.pytorch``."""
    return any(isinstance(model, cls) for cls in _lightning_module_classes())


def _overrides(model: Any, name: str) -> bool:
    own = getattr(type(model), name, None)
    return own is not None and all(own is not getattr(cls, name, None) for cls in _lightning_module_classes())


class LightningSteps:
    """The user's ``training_step`` and ``configure_optimizers``, called the way Lightning calls them.

    Args:
        module: the user's ``LightningModule``.

    Raises:
        NotSupportedError: manual optimization, no ``forward``, or ``configure_optimizers`` returning
            schedulers or several optimizers (train such a module with Lightning directly).
    """

    def __init__(self, module: Any) -> None:
        name = type(module).__name__
        if not module.automatic_optimization:
            raise NotSupportedError(
                f"{name} uses manual optimization (automatic_optimization = False); the facade does one "
                f"optimizer step per batch itself: train it with pytorch_lightning.Trainer directly")
        if not _overrides(module, "forward"):
            raise NotSupportedError(
                f"{name} has no forward(); the facade validates and predicts with model(x): define forward")
        self.module = module
        self.has_training_step = _overrides(module, "training_step")
        self.has_optimizers = _overrides(module, "configure_optimizers")
        # Outside a Lightning run, self.log() warns on every call; the facade does the logging.
        warnings.filterwarnings("ignore", message=r"You are trying to `self\.log\(\)`")

    def training_loss(self, batch: Any, batch_idx: int) -> Any:
        """The loss tensor of the user's ``training_step`` (a tensor or ``{"loss": tensor, ...}``)."""
        if self.module._trainer is not None:
            # Inside a Lightning run the nested module shares the trainer; self.log() needs to know the hook.
            self.module._current_fx_name = "training_step"
        out = self.module.training_step(batch, batch_idx)
        if isinstance(out, dict):
            out = out.get("loss")
        if out is None:
            raise NotSupportedError(
                f"{type(self.module).__name__}.training_step returned no loss (skipping a batch is not supported)")
        return out

    def optimizer(self) -> Optional[Any]:
        """The optimizer from ``configure_optimizers`` (None when the module does not define it)."""
        if not self.has_optimizers:
            return None
        out = self.module.configure_optimizers()
        if isinstance(out, dict) and set(out) == {"optimizer"}:
            out = out["optimizer"]
        if isinstance(out, (list, tuple)) and len(out) == 1 and hasattr(out[0], "param_groups"):
            out = out[0]
        if not hasattr(out, "param_groups"):
            raise NotSupportedError(
                f"{type(self.module).__name__}.configure_optimizers must return one optimizer here "
                f"(got {type(out).__name__}); learning-rate schedulers and several optimizers are not supported "
                f"by the facade yet: use the spec's scheduler, or train it with pytorch_lightning.Trainer")
        return out


class TrainingStepForward(torch.nn.Module):
    """A module whose ``forward(batch, batch_idx)`` is the user's ``training_step`` (its loss tensor).

    For several processes: wrapped in ``DistributedDataParallel`` and called through it, the step runs inside
    ``DDP.forward``, which is where DDP arms its all-reduce of the gradients (Lightning's
    ``_LightningModuleWrapperBase`` redirects ``training_step`` through ``DDP.forward`` the same way). The
    user's module is its only child, so the parameters DDP averages are exactly the user's.

    Args:
        steps: the :class:`LightningSteps` of the user's module.
    """

    def __init__(self, steps: LightningSteps) -> None:
        super().__init__()
        self.module = steps.module
        self._steps = steps

    def forward(self, batch: Any, batch_idx: int) -> Any:
        return self._steps.training_loss(batch, batch_idx)


def user_steps(model: Any) -> Optional[LightningSteps]:
    """``LightningSteps`` for a user's ``LightningModule``, None for any other model."""
    return LightningSteps(model) if is_lightning_module(model) else None
