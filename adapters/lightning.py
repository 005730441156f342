"""PyTorch Lightning backend: a ``LightningModule`` around the torch model, hooks as a Lightning Callback."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from typing import Any

import torch

from adapters import torch_common as tc
from unified.context import RunContext

try:
    import pytorch_lightning as pl
except ImportError as e:  # pragma: no cover - the registry checks first
    from unified.errors import BackendUnavailableError

    raise BackendUnavailableError(
        f'pytorch-lightning is not installed: pip install "unified-trainer[lightning]" ({e})'
    ) from e


class _Module(pl.LightningModule):
    def __init__(self, adapter: "LightningAdapter") -> None:
        super().__init__()
        self.net = adapter.model
        self._adapter = adapter
        self.val_acc: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = tc.unpack(batch)
        return self._adapter.loss_fn(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tc.eval_batch(self.net, self._adapter.loss_sum, batch, self.val_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self._adapter.optimizer = tc.make_optimizer(self._adapter.ctx.spec.optimizer, self.net.parameters())
        return self._adapter.optimizer


class _Bridge(pl.Callback):
    """Turns Lightning's hooks into the facade's events."""

    def __init__(self, adapter: "LightningAdapter") -> None:
        self.adapter = adapter
        self.events = adapter.ctx.events
        self.max_steps = adapter.ctx.spec.trainer.max_steps
        self.val: dict[str, float] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.events.fit_start()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val = None
        self.events.epoch_start(trainer.current_epoch + 1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.events.train_batch_end(loss.detach(), trainer.global_step, batch_idx)
        if self.events.state.should_stop or (self.max_steps is not None and trainer.global_step >= self.max_steps):
            # Ending mid-epoch: Lightning validates a batch that sets should_stop, so the partial
            # epoch is closed with validation exactly as on the other backends.
            trainer.should_stop = True

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.val_acc = self.adapter.ctx.accumulator("val")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val = pl_module.val_acc.compute()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.events.epoch_end(self.val):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.events.fit_end()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.events.exception(exception)


class LightningAdapter(tc.TorchAdapter):
    name = "lightning"
    packages = ("torch", "pytorch-lightning")

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.module = _Module(self)
        self.trainer: pl.Trainer | None = None

    def fit(self) -> None:
        ctx, spec = self.ctx, self.ctx.spec
        ctx.events.bind(self, self.current_lr)
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
        val_loader = tc.eval_loader(ctx, "val")
        max_steps = spec.trainer.max_steps
        self.trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=-1 if max_steps is not None else spec.trainer.max_epochs,
            max_steps=max_steps if max_steps is not None else -1,
            logger=False,  # the facade owns logging
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            limit_val_batches=None if val_loader is not None else 0,
            use_distributed_sampler=False,  # keep the canonical batch order
            deterministic=spec.trainer.deterministic,
            callbacks=[_Bridge(self)],
            default_root_dir=str(ctx.run_dir),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*")
            warnings.filterwarnings("ignore", message=".*infer the `batch_size`.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            sigint = signal.getsignal(signal.SIGINT)
            try:
                self.trainer.fit(self.module, train_dataloaders=tc.train_loader(ctx), val_dataloaders=val_loader)
            except SystemExit:
                # On Ctrl-C Lightning shuts down, ignores SIGINT from then on and calls sys.exit(1);
                # a library must not exit the process: restore the handler and re-raise the interrupt.
                if self.trainer.interrupted:
                    raise KeyboardInterrupt from None
                raise
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, sigint)

    def save_checkpoint(self, path: str) -> None:
        if self.trainer is not None:
            self.trainer.save_checkpoint(path)
        else:
            torch.save({"state_dict": self.module.state_dict()}, path)
