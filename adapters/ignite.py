"""PyTorch-Ignite backend: an ``ignite.engine.Engine`` trainer and evaluator, hooks as event handlers."""

from __future__ import annotations

import math
from typing import Any

from adapters import torch_common as tc
from unified.context import RunContext

try:
    from ignite.engine import Engine, Events
except ImportError as e:  # pragma: no cover - the registry checks first
    from unified.errors import BackendUnavailableError

    raise BackendUnavailableError(f'pytorch-ignite is not installed: pip install "unified-trainer[ignite]" ({e})') from e

import torch


class IgniteAdapter(tc.TorchAdapter):
    name = "ignite"
    packages = ("torch", "pytorch-ignite")

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.optimizer = tc.make_optimizer(ctx.spec.optimizer, self.model.parameters())
        self.engine: Engine | None = None

    def _train_step(self) -> Any:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn

        def step(engine: Engine, batch: Any) -> torch.Tensor:
            # Like create_supervised_trainer, but returns the detached loss tensor instead of
            # loss.item(): no host sync per step (the facade syncs on logging steps only).
            model.train()
            optimizer.zero_grad()
            x, y = tc.unpack(batch)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    def fit(self) -> None:
        ctx, events, spec = self.ctx, self.ctx.events, self.ctx.spec
        events.bind(self, self.current_lr)
        loader = tc.train_loader(ctx)
        val_loader = tc.eval_loader(ctx, "val")
        trainer = Engine(self._train_step())
        self.engine = trainer
        acc = ctx.accumulator("val")
        model, loss_sum = self.model, self.loss_sum

        def eval_step(engine: Engine, batch: Any) -> None:
            model.eval()
            tc.eval_batch(model, loss_sum, batch, acc)

        evaluator = Engine(eval_step)
        max_steps = spec.trainer.max_steps
        sampler = getattr(loader, "sampler", None)
        epoch_open = {"value": False}

        def on_started(engine: Engine) -> None:
            events.fit_start()

        def on_epoch_started(engine: Engine) -> None:
            if isinstance(sampler, tc.CanonicalBatchSampler):
                sampler.set_epoch(engine.state.epoch - 1)
            epoch_open["value"] = True
            events.epoch_start(engine.state.epoch)

        def on_iteration_completed(engine: Engine) -> None:
            it = engine.state.iteration
            length = engine.state.epoch_length or it
            events.train_batch_end(engine.state.output, it, (it - 1) % length)
            if events.state.should_stop or (max_steps is not None and it >= max_steps):
                engine.terminate_epoch()  # EPOCH_COMPLETED still fires: the partial epoch is validated

        def on_epoch_completed(engine: Engine) -> None:
            epoch_open["value"] = False
            val = None
            if val_loader is not None:
                acc.reset()
                evaluator.run(val_loader)
                val = acc.compute()
            stop = events.epoch_end(val)
            if stop or (max_steps is not None and engine.state.iteration >= max_steps):
                engine.terminate()

        trainer.add_event_handler(Events.STARTED, on_started)
        trainer.add_event_handler(Events.EPOCH_STARTED, on_epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration_completed)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, on_epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, lambda engine: events.fit_end())

        if max_steps is not None:
            steps = len(loader) if hasattr(loader, "__len__") else None
            max_epochs = math.ceil(max_steps / steps) if steps else 2**31 - 1
        else:
            max_epochs = spec.trainer.max_epochs
        try:
            trainer.run(loader, max_epochs=max_epochs)
        except BaseException as e:
            events.exception(e)
            raise

    def save_checkpoint(self, path: str) -> None:
        # The layout of ignite.handlers.Checkpoint: one dict of state_dicts, loadable with
        # Checkpoint.load_objects(to_load={"model": ..., "optimizer": ..., "trainer": ...}, checkpoint=...).
        obj: dict[str, Any] = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            obj["optimizer"] = self.optimizer.state_dict()
        if self.engine is not None:
            obj["trainer"] = self.engine.state_dict()
        torch.save(obj, path)

