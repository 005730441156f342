"""PyTorch-Ignite backend: an ``ignite.engine.Engine`` trainer and evaluator, hooks as event handlers."""

from __future__ import annotations

import logging
from typing import Any

from unified.adapters import torch_common as tc
from unified.context import RunContext
from unified.errors import SpecError

try:
    from ignite.engine import Engine, Events
except ImportError as e:  # pragma: no cover - the registry checks first
    from unified.errors import BackendUnavailableError

    raise BackendUnavailableError(f'pytorch-ignite is not installed: pip install "unified-trainer[ignite]" ({e})') from e

import torch


class IgniteAdapter(tc.TorchAdapter):
    name = "ignite"
    packages = ("torch", "pytorch-ignite")
    # precision:16-mixed: float16 autocast + torch.amp.GradScaler, on a GPU only (unified.devices refuses the CPU)
    features = tc.TorchAdapter.features | {"scheduler", "accumulation", "gradient_clipping", "precision:bf16-mixed",
                                           "precision:16-mixed", "distributed"}

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.optimizer = self.new_optimizer(self.model.parameters())
        self.new_scheduler(self.optimizer)  # torch's scheduler, stepped from the Engine (self.scheduler)
        self.engine: Engine | None = None
        self._resume: dict[str, Any] | None = None  # the checkpoint's run state + engine state, for fit()

    def _train_step(self) -> Any:
        optimizer, loss_fn, module = self.optimizer, self.loss_fn, self.model
        model, user_step = self.train_forward()  # through DDP with several processes

        tr = self.ctx.spec.trainer
        accumulate, clip_norm, precision = tr.accumulate_grad_batches, tr.gradient_clip_norm, tr.precision
        loop, stepper = self.loop, self.stepper
        move, scaler, device_type = self.move, self.scaler, self.device.type

        def step(engine: Engine, batch: Any) -> torch.Tensor | None:
            # Like create_supervised_trainer, but returns the detached loss tensor instead of
            # loss.item(): no host sync per step (the facade syncs on logging steps only).
            # Accumulation windows as the loop contract says (adapters/base.py); the output is the
            # window's mean loss on a stepping batch, else None.
            model.train()
            if move is not None:  # a GPU: the batch's one copy (non_blocking)
                batch = move(batch)
            it, length = engine.state.iteration, engine.state.epoch_length  # it already counts this batch
            pos = (it - 1) % length if length else it - 1
            first, last = loop.opens(pos), loop.closes(pos)
            if first:
                optimizer.zero_grad()
            with tc.autocast(precision, device_type):
                if user_step is not None:  # a user's LightningModule.training_step
                    loss = user_step(batch, (engine.state.iteration - 1) % (engine.state.epoch_length or 2**62))
                else:
                    x, y = tc.unpack(batch)
                    loss = loss_fn(model(x), y)
            tc.backward(loss / accumulate if accumulate > 1 else loss, scaler)
            self.add_micro_loss(loss.detach())
            if not last:
                return None
            self.step_lr = optimizer.param_groups[0]["lr"]
            tc.optimizer_step(optimizer, module, clip_norm, scaler)
            stepper.after_optimizer_step()
            return self.take_step_loss()

        return step

    def fit(self) -> None:
        ctx, events, spec = self.ctx, self.ctx.events, self.ctx.spec
        events.bind(self, self.current_lr)
        self.world = tc.join_world(events, self.placement)  # several processes: gloo on CPU, NCCL on GPUs
        loader = tc.train_loader(ctx)
        val_loader = tc.eval_loader(ctx, "val")
        trainer = Engine(self._train_step())
        trainer.logger.setLevel(logging.CRITICAL)  # its "terminating due to exception": the facade reports errors
        self.engine = trainer
        acc = ctx.accumulator("val")
        model, loss_sum = self.model, self.loss_sum

        move, device_type = self.move, self.device.type

        def eval_step(engine: Engine, batch: Any) -> None:
            model.eval()
            with tc.autocast(self.precision, device_type):
                tc.eval_batch(model, loss_sum, batch, acc, move)

        evaluator = Engine(eval_step)
        sampler = getattr(loader, "sampler", None)
        loop, stepper = self.loop, self.stepper

        def on_started(engine: Engine) -> None:
            events.fit_start()

        def on_epoch_started(engine: Engine) -> None:
            if isinstance(sampler, tc.CanonicalBatchSampler):
                sampler.set_epoch(engine.state.epoch - 1)
            events.epoch_start(engine.state.epoch)

        def on_iteration_completed(engine: Engine) -> None:
            if engine.state.output is None:
                return  # a micro-batch inside an accumulation window: no optimizer step yet
            it = engine.state.iteration
            length = engine.state.epoch_length or it
            if events.train_batch_end(engine.state.output, loop.global_step(it), (it - 1) % length):
                engine.terminate_epoch()  # EPOCH_COMPLETED still fires: the partial epoch is validated

        def on_epoch_completed(engine: Engine) -> None:
            stepper.before_validation(not engine.state.epoch_length
                                      or engine.state.iteration % engine.state.epoch_length == 0)
            val = None
            if val_loader is not None:
                acc.reset()
                evaluator.run(val_loader)
                val = acc.compute()
            stop = events.epoch_end(val)
            stepper.after_epoch_end(events.state.metrics)
            if stop:
                engine.terminate()

        trainer.add_event_handler(Events.STARTED, on_started)
        trainer.add_event_handler(Events.EPOCH_STARTED, on_epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration_completed)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, on_epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, lambda engine: events.fit_end())

        max_epochs = loop.epochs or 2**31 - 1  # unbounded: max_steps ends a run on a loader without len
        if self._resume is not None:
            # Ignite's own resume: the Engine continues from the restored iteration (mid-epoch too, counting
            # the epoch's done batches as done); the canonical sampler leaves those batches out.
            tc.start_sampler_at(loader, self._resume["run_state"], events.state.steps_per_epoch,
                                spec.trainer.accumulate_grad_batches)
            trainer.load_state_dict(self._resume["engine"])
            self._resume = None
        try:
            trainer.run(loader, max_epochs=max_epochs)
        except BaseException as e:
            events.exception(e)
            raise
        finally:
            if self.world.distributed:
                torch.distributed.destroy_process_group()

    def save_checkpoint(self, path: str) -> None:
        # The layout of ignite.handlers.Checkpoint: one dict of state_dicts, loadable with
        # Checkpoint.load_objects(to_load={"model": ..., "optimizer": ..., "trainer": ...}, checkpoint=...).
        # "scheduler" when the spec has one; "unified" is the facade's run state (counters, batch position,
        # callback state) that exact resume needs beyond Ignite's own.
        obj: dict[str, Any] = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            obj["optimizer"] = self.optimizer.state_dict()
        if getattr(self, "scheduler", None) is not None:
            obj["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            obj["scaler"] = self.scaler.state_dict()
        if self.engine is not None:
            obj["trainer"] = self.engine.state_dict()
        obj["unified"] = tc.pack_run_state(self.ctx.events.resume_state())
        torch.save(obj, path)

    @classmethod
    def read_checkpoint(cls, path: Any, spec: Any) -> tuple[dict[str, Any], Any]:
        obj = tc.load_torch_checkpoint(path, "ignite")
        if not isinstance(obj, dict) or not {"model", "trainer", "unified"} <= set(obj):
            kind = "a Lightning checkpoint" if isinstance(obj, dict) and "pytorch-lightning_version" in obj else \
                "not an ignite checkpoint written by unified-trainer"
            raise SpecError(f"--resume {path}: {kind} (expected the keys model, optimizer, trainer, unified)")
        return tc.unpack_run_state(obj["unified"], path), obj

    def restore(self, payload: Any, run_state: dict[str, Any]) -> None:
        self.load_training_state(payload)
        self._resume = {"run_state": run_state, "engine": payload["trainer"]}

