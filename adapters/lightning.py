"""PyTorch Lightning backend: a ``LightningModule`` around the torch model, hooks as a Lightning Callback."""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from typing import Any

import torch

from unified.adapters import torch_common as tc
from unified.context import RunContext
from unified.errors import SpecError

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
        self._user_step = adapter.user_step_loss()
        self.val_acc: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self._user_step is not None:
            loss = self._user_step(batch, batch_idx)
        else:
            x, y = tc.unpack(batch)
            loss = self._adapter.loss_fn(self.net(x), y)
        self._adapter.add_micro_loss(loss.detach())  # train/loss of an accumulated step: the window's mean
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        tc.eval_batch(self.net, self._adapter.loss_sum, batch, self.val_acc)

    def configure_optimizers(self) -> Any:
        adapter = self._adapter
        adapter.optimizer = adapter.new_optimizer(self.net.parameters())
        scheduler = adapter.new_scheduler(adapter.optimizer)
        if scheduler is None:
            return adapter.optimizer
        plan = adapter.schedule_plan
        # Lightning's own mechanism: "step" schedulers step after each optimizer step (not per
        # accumulated micro-batch), "epoch" ones at epoch end; a plateau one reads `monitor` from
        # callback_metrics, which the bridge fills from the facade's logged values.
        return {"optimizer": adapter.optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": plan.interval, "frequency": 1,
                                 "monitor": plan.monitor, "strict": True}}


class _Bridge(pl.Callback):
    """Turns Lightning's hooks into the facade's events."""

    def __init__(self, adapter: "LightningAdapter") -> None:
        self.adapter = adapter
        self.events = adapter.ctx.events
        self.val: dict[str, float] | None = None
        self._last_step = -1
        self._started_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return "unified"

    def state_dict(self) -> dict[str, Any]:
        # The facade's run state rides in Lightning's checkpoint as this callback's state.
        return tc.pack_run_state(self.events.resume_state())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # the facade restored it before fit (LightningAdapter.restore)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        tc.join_world(self.events, self.adapter.placement)  # several processes: DDP has set up the group already
        self.events.fit_start()
        resumed = self.adapter.resumed_mid_epoch
        if resumed is not None:
            # Lightning does not call on_train_epoch_start when it restarts inside an epoch.
            self.val = None
            self._started_epoch = resumed
            self.events.epoch_start(resumed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started_epoch == trainer.current_epoch + 1:
            return
        self.val = None
        self._started_epoch = trainer.current_epoch + 1
        self.events.epoch_start(trainer.current_epoch + 1)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.adapter.step_lr = optimizer.param_groups[0]["lr"]  # the lr this step uses (a Python float)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._last_step:
            return  # a micro-batch inside an accumulation window: no optimizer step yet
        self._last_step = trainer.global_step
        if self.events.train_batch_end(self.adapter.take_step_loss(), trainer.global_step, batch_idx):
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
        stepper = self.adapter.stepper
        if stepper.on_plateau:
            # Lightning steps the scheduler itself (its lr_scheduler config follows the contract's timing);
            # ReduceLROnPlateau steps after this hook on the value Lightning finds in callback_metrics.
            value = stepper.plateau_value(self.events.state.metrics)
            trainer.callback_metrics[stepper.plan.monitor] = torch.tensor(value, dtype=torch.float64)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.events.fit_end()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.events.exception(exception)


def _strategy(spec: Any, placement: Any) -> Any:
    """DDP with the job's collective timeout (``unified.distributed.timeout_s``) for several processes, over
    the placement's collective library (NCCL between GPUs, gloo on the CPU)."""
    if spec.trainer.devices * spec.trainer.num_nodes <= 1:
        return "auto"
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    from unified.distributed import timeout_s

    return DDPStrategy(timeout=timedelta(seconds=timeout_s()), process_group_backend=placement.dist_backend)


# trainer.precision -> Lightning's precision plugin (16-mixed: float16 autocast + GradScaler, on a GPU only)
_PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


class LightningAdapter(tc.TorchAdapter):
    name = "lightning"
    packages = ("torch", "pytorch-lightning")
    # precision:16-mixed: Lightning's own float16 AMP, on a GPU only (unified.devices refuses the CPU, where
    # Lightning would silently run bf16-mixed)
    features = tc.TorchAdapter.features | {"scheduler", "accumulation", "gradient_clipping", "precision:bf16-mixed",
                                           "precision:16-mixed", "distributed"}

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.scaler = None  # 16-mixed: Lightning's precision plugin scales the loss itself
        self.module = _Module(self)
        self.trainer: pl.Trainer | None = None
        self._ckpt_path: str | None = None  # resume: Lightning's own trainer.fit(ckpt_path=...)
        self._run_state: dict[str, Any] | None = None
        self.resumed_mid_epoch: int | None = None  # 1-based epoch when resuming inside it

    def fit(self) -> None:
        ctx, spec = self.ctx, self.ctx.spec
        ctx.events.bind(self, self.current_lr)
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
        val_loader = tc.eval_loader(ctx, "val")
        max_steps = spec.trainer.max_steps
        self.trainer = pl.Trainer(
            accelerator=self.placement.accelerator,  # unified.devices: cpu, or gpu (a GPU per process)
            # several processes: Lightning's DDP strategy; the processes come from unified.distributed or
            # torchrun, so Lightning launches none itself (its environment sees LOCAL_RANK/WORLD_SIZE set)
            devices=spec.trainer.devices,
            num_nodes=spec.trainer.num_nodes,
            strategy=_strategy(spec, self.placement),
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
            accumulate_grad_batches=spec.trainer.accumulate_grad_batches,
            # torch.nn.utils.clip_grad_norm_ on the accumulated gradient, just before the optimizer step
            gradient_clip_val=spec.trainer.gradient_clip_norm,
            gradient_clip_algorithm="norm" if spec.trainer.gradient_clip_norm is not None else None,
            precision=_PRECISION[spec.trainer.precision],
            callbacks=[_Bridge(self)],
            default_root_dir=str(ctx.run_dir),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*")
            warnings.filterwarnings("ignore", message=".*infer the `batch_size`.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
            sigint = signal.getsignal(signal.SIGINT)
            loader = tc.train_loader(ctx)
            if self._run_state is not None:
                # Lightning restores weights, optimizer, schedulers and its loop counters from the file (mid-
                # epoch too, counting the done batches); the canonical sampler leaves those batches out.
                epoch0, done = tc.start_sampler_at(loader, self._run_state, ctx.events.state.steps_per_epoch,
                                                   spec.trainer.accumulate_grad_batches)
                self.resumed_mid_epoch = epoch0 + 1 if done else None
            try:
                self.trainer.fit(self.module, train_dataloaders=loader, val_dataloaders=val_loader,
                                 ckpt_path=self._ckpt_path)
            except SystemExit:
                # On Ctrl-C Lightning shuts down, ignores SIGINT from then on and calls sys.exit(1);
                # a library must not exit the process: restore the handler and re-raise the interrupt.
                if self.trainer.interrupted:
                    raise ctx.events.interruption or KeyboardInterrupt() from None
                raise
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, sigint)

    def save_checkpoint(self, path: str) -> None:
        if self.trainer is not None:
            self.trainer.save_checkpoint(path)  # callbacks["unified"] holds the facade's run state
        else:
            torch.save({"state_dict": self.module.state_dict()}, path)

    @classmethod
    def read_checkpoint(cls, path: Any, spec: Any) -> tuple[dict[str, Any], Any]:
        obj = tc.load_torch_checkpoint(path, "Lightning")
        blob = obj.get("callbacks", {}).get("unified") if isinstance(obj, dict) else None
        if blob is None:
            kind = "an Ignite checkpoint" if isinstance(obj, dict) and "trainer" in obj and "model" in obj else \
                "not a Lightning checkpoint written by unified-trainer"
            raise SpecError(f"--resume {path}: {kind} (no callbacks['unified'] run state)")
        return tc.unpack_run_state(blob, path), {"path": str(path), "torch_rng": blob.get("torch_rng")}

    def restore(self, payload: Any, run_state: dict[str, Any]) -> None:
        spe = self.ctx.events.state.steps_per_epoch
        if run_state.get("epoch_closed") and spe and 0 < int(run_state["batches_done"]) < spe:
            # Lightning marks an epoch that a stop request or max_steps ended early as finished, and its
            # loops then restart in the next epoch with the old batch count: not the canonical order.
            from unified.errors import NotSupportedError

            raise NotSupportedError(
                f"backend 'lightning' cannot resume exactly from {payload['path']}: it was written after training "
                f"ended inside epoch {run_state['epoch']} (step {run_state['global_step']}, max_steps or a stop "
                f"request), which Lightning's loops restart at the next epoch; resume from an epoch-end or "
                f"interrupted checkpoint, or on ignite/keras")
        self._ckpt_path, self._run_state = payload["path"], run_state
        if payload.get("torch_rng") is not None:
            torch.set_rng_state(payload["torch_rng"])
