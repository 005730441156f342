"""Plain PyTorch backend: a training loop written on the loop contract (adapters/base.py), no trainer library.

It is the reference the other backends are compared with and the speed floor: per step it does what a
hand-written loop does (zero_grad, forward, backward, clip, step) plus the contract's calls, and no host
sync outside logging steps.
"""

from __future__ import annotations

from typing import Any, Optional

from unified.adapters import torch_common as tc
from unified.context import RunContext
from unified.errors import SpecError

import torch

CHECKPOINT_KEYS = ("model", "optimizer", "loop", "unified")  # + "scheduler" when the spec has one


class TorchLoopAdapter(tc.TorchAdapter):
    name = "torch"
    packages = ("torch",)
    # precision:16-mixed: float16 autocast + torch.amp.GradScaler, on a GPU only (unified.devices refuses the CPU)
    features = tc.TorchAdapter.features | {"scheduler", "accumulation", "gradient_clipping", "precision:bf16-mixed",
                                           "precision:16-mixed", "distributed"}

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.optimizer = self.new_optimizer(self.model.parameters())
        self.new_scheduler(self.optimizer)
        self.global_step = 0
        self._resume_state: Optional[dict[str, Any]] = None  # restore(): the checkpoint's run state

    # -- training ------------------------------------------------------------------------------------------
    def fit(self) -> None:
        ctx, events = self.ctx, self.ctx.events
        events.bind(self, self.current_lr)
        self.world = tc.join_world(events, self.placement)
        loader = tc.train_loader(ctx)
        sampler = getattr(loader, "sampler", None)
        canonical = isinstance(sampler, tc.CanonicalBatchSampler)
        epochs = self.loop.epochs
        start_epoch, skip = self._start_at(loader)
        try:
            events.fit_start()
            epoch = start_epoch
            while epochs is None or epoch < epochs:
                if canonical and not (epoch == start_epoch and skip):
                    sampler.set_epoch(epoch)  # a resumed epoch's sampler was pointed at it by restore()
                events.epoch_start(epoch + 1)
                full = self._train_epoch(loader, skip if epoch == start_epoch else 0)
                self.stepper.before_validation(full)
                val = self.evaluate("val") if ctx.has_val else None
                stop = events.epoch_end(val)
                self.stepper.after_epoch_end(events.state.metrics)
                if stop:
                    break
                epoch += 1
        except BaseException as e:
            events.exception(e)
            raise
        finally:
            if self.world.distributed:
                torch.distributed.destroy_process_group()
        events.fit_end()

    def _start_at(self, loader: Any) -> tuple[int, int]:
        """(0-based epoch, micro-batches of it done) to start from: (0, 0), or the restored checkpoint's."""
        if self._resume_state is None:
            return 0, 0
        loop = self.loop
        epoch0, done = tc.start_sampler_at(loader, self._resume_state, loop.steps_per_epoch, loop.accumulate)
        self._resume_state = None
        return epoch0, min(done * loop.accumulate, loop.batches_per_epoch or 0)

    def _train_epoch(self, loader: Any, first: int) -> bool:
        """One epoch from its micro-batch ``first``; returns whether it ran to its end (not cut short)."""
        events, loop, stepper, optimizer = self.ctx.events, self.loop, self.stepper, self.optimizer
        model, user_step = self.train_forward()  # through DDP with several processes
        loss_fn = self.loss_fn.forward  # forward: no module-call hooks per step
        n, clip_norm, precision = loop.accumulate, self.ctx.spec.trainer.gradient_clip_norm, self.precision
        move, scaler, device_type, module = self.move, self.scaler, self.device.type, self.model
        model.train()
        pos = first - 1
        for pos, batch in enumerate(loader, start=first):
            if move is not None:  # a GPU: the batch's one copy (non_blocking)
                batch = move(batch)
            if loop.opens(pos):
                optimizer.zero_grad()
            with tc.autocast(precision, device_type):
                if user_step is not None:  # a user's LightningModule.training_step
                    loss = user_step(batch, pos)
                else:
                    x, y = tc.unpack(batch)
                    loss = loss_fn(model(x), y)
            if n == 1:
                tc.backward(loss, scaler)
                step_loss = loss.detach()
            else:
                tc.backward(loss / n, scaler)
                self.add_micro_loss(loss.detach())
                if not loop.closes(pos):
                    continue
                step_loss = self.take_step_loss()
            self.step_lr = optimizer.param_groups[0]["lr"]
            tc.optimizer_step(optimizer, module, clip_norm, scaler)
            stepper.after_optimizer_step()
            self.global_step += 1
            if events.train_batch_end(step_loss, self.global_step, pos):
                break
        length = loop.batches_per_epoch
        return length is None or pos + 1 >= length

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        # One dict of state_dicts (the layout torch's tutorials save and ignite.handlers.Checkpoint writes),
        # loadable with torch.load(weights_only=True); "unified" is the facade's run state.
        obj: dict[str, Any] = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                               "loop": {"global_step": self.global_step}}
        if self.scheduler is not None:
            obj["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            obj["scaler"] = self.scaler.state_dict()
        obj["unified"] = tc.pack_run_state(self.ctx.events.resume_state())
        torch.save(obj, path)

    @classmethod
    def read_checkpoint(cls, path: Any, spec: Any) -> tuple[dict[str, Any], Any]:
        obj = tc.load_torch_checkpoint(path, "torch")
        if not isinstance(obj, dict) or not set(CHECKPOINT_KEYS) <= set(obj):
            raise SpecError(f"--resume {path}: not a torch-backend checkpoint written by unified-trainer (expected "
                            f"the keys {', '.join(CHECKPOINT_KEYS)})")
        return tc.unpack_run_state(obj["unified"], path), obj

    def restore(self, payload: Any, run_state: dict[str, Any]) -> None:
        self.load_training_state(payload)
        self.global_step = int(payload["loop"]["global_step"])
        self._resume_state = run_state  # fit() points the canonical sampler at its place in the batch order
