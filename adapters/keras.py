"""Keras 3 backend: ``keras.Model.fit`` on TensorFlow, PyTorch or JAX, hooks as a Keras Callback.

Keras picks its tensor backend once per process (``KERAS_BACKEND`` before ``import keras``); the
adapter sets it from ``spec.keras_backend`` when Keras is not imported yet and refuses a different
one afterwards (run that backend in another process: ``unified run --keras-backend ...``).

``trainer.devices > 1`` trains N replicas inside this process (TensorFlow's MirroredStrategy, JAX's
keras.distribution.DataParallel): adapters/keras_replicas.py.

``trainer.precision: 16-mixed`` (a GPU only, ``unified.devices``): the ``mixed_float16`` policy while the network is
built, float32 outputs, and ``keras_optim.TorchLossScaleOptimizer`` around the PyTorch-rule optimizer.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import importlib.util
import os
import sys
from typing import Any, Iterator, Optional

import numpy as np

from unified.adapters import keras_devices
from unified.adapters.base import BackendAdapter, LoopPlan, SchedulerStepper
from unified.adapters.keras_outputs import output_activation, to_logits
from unified.adapters.keras_replicas import Replicas, prepare_devices, why_not
from unified.context import RunContext
from unified.errors import BackendUnavailableError, NotSupportedError, SpecError
from unified.models import ModelPlan, call_factory, import_target
from unified.registry import resolve_keras_backend

KERAS_BACKENDS = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}  # keras backend -> module


def import_keras(requested: Optional[str]) -> Any:
    """Import keras on the requested backend (or fail clearly when another one is already loaded)."""
    want = resolve_keras_backend(requested)
    if want not in KERAS_BACKENDS:
        raise SpecError(f"unknown Keras backend {want!r}; expected tensorflow, torch or jax", path="keras_backend")
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        have = keras.backend.backend()
        if have != want:
            raise NotSupportedError(
                f"keras_backend {want!r}: Keras is already loaded on {have!r} in this process and cannot switch; "
                f"run it in a new process (unified run SPEC --backend keras --keras-backend {want})"
            )
        return keras
    if importlib.util.find_spec(KERAS_BACKENDS[want]) is None:
        extra = {"tensorflow": "keras", "torch": "keras,ignite", "jax": "keras-jax"}[want]
        raise BackendUnavailableError(
            f"keras_backend {want!r} needs the {KERAS_BACKENDS[want]} package: pip install \"unified-trainer[{extra}]\""
        )
    os.environ["KERAS_BACKEND"] = want
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _np_eval_loss_sum(name: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """Sum over samples of the per-sample loss, PyTorch's definitions, in float64."""
    out = outputs.astype(np.float64)
    if name == "cross_entropy":
        out = out.reshape(len(out), -1)
        m = out.max(axis=1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(out - m).sum(axis=1))
        return float((logz - out[np.arange(len(out)), targets.astype(np.int64)]).sum())
    y = targets.astype(np.float64).reshape(out.shape) if targets.size == out.size else targets.astype(np.float64)
    if name == "bce_with_logits":
        per = np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))
    elif name == "mse":
        per = (out - y) ** 2
    elif name == "mae":
        per = np.abs(out - y)
    else:  # huber, delta 1
        d = np.abs(out - y)
        per = np.where(d < 1.0, 0.5 * d * d, d - 0.5)
    return float(per.reshape(len(per), -1).mean(axis=1).sum())


class KerasAdapter(BackendAdapter):
    name = "keras"
    packages = ("keras", "tensorflow", "torch", "jax")
    # precision:16-mixed: mixed_float16 + a LossScaleOptimizer with GradScaler's rule around the PyTorch-rule
    # optimizer (keras_optim.TorchLossScaleOptimizer), on a GPU only (unified.devices refuses the CPU)
    features = BackendAdapter.features | {"scheduler", "accumulation", "gradient_clipping", "precision:bf16-mixed",
                                          "precision:16-mixed", "distributed"}
    devices_in_process = True  # trainer.devices > 1: replicas in this process (adapters/keras_replicas.py)
    exporter = "unified.adapters.export_keras"
    export_formats = frozenset({"onnx", "savedmodel", "keras", "tflite", "torchscript"})  # union; see below

    @classmethod
    def label(cls, spec: Any) -> str:
        return f"keras on {spec.keras_backend}" if getattr(spec, "keras_backend", None) else "keras"

    @classmethod
    def export_formats_for(cls, spec: Any) -> frozenset[str]:
        """Formats depend on the tensor backend: SavedModel/TFLite need TensorFlow, TorchScript torch; on JAX
        ``.keras``, and SavedModel when TensorFlow is installed (export_keras.py says why not ONNX)."""
        from unified.adapters.export_keras import formats_for

        return formats_for(resolve_keras_backend(spec.keras_backend))

    @classmethod
    def check_spec(cls, spec: Any) -> None:
        """The base checks, and what several devices mean on Keras: one process, N replicas (TensorFlow's
        MirroredStrategy, JAX's DataParallel); no torch DDP, no several machines, not on the torch backend.

        With ``devices > 1`` the devices are also made here (N logical CPU devices), the earliest point of a
        run, before anything initialises the framework's devices.
        """
        tr, kb = spec.trainer, resolve_keras_backend(spec.keras_backend)
        if tr.devices > 1 and kb in KERAS_BACKENDS and why_not(kb) is None:
            prepare_devices(kb, spec)  # before the base checks probe the framework for GPUs (JAX: that starts it)
        super().check_spec(spec)
        if tr.num_nodes > 1:
            raise NotSupportedError("backend 'keras' does not support trainer.num_nodes > 1: its devices are the "
                                    "replicas of one process (tf.distribute.MirroredStrategy / "
                                    "keras.distribution.DataParallel); use backend torch / lightning / ignite")
        if tr.strategy == "ddp":
            raise NotSupportedError("backend 'keras' does not support trainer.strategy: 'ddp' (torch's "
                                    "DistributedDataParallel); trainer.strategy: auto with trainer.devices > 1 "
                                    "trains on one process's devices (docs/scaling.md)")
        if tr.devices > 1:
            reason = why_not(kb)
            if reason is not None:
                raise NotSupportedError(f"backend 'keras' on {kb} does not support trainer.devices > 1: {reason}")

    @classmethod
    def gpu_probe(cls, spec: Any) -> Any:
        """The GPUs of the tensor backend (adapters/keras_devices.py)."""
        return keras_devices.probe(resolve_keras_backend(spec.keras_backend))

    @classmethod
    def versions(cls) -> dict[str, str]:
        out = {}
        for pkg in ("keras", "tensorflow", "tensorflow-cpu", "torch", "jax"):
            try:
                out[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                continue
        return out

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        spec = ctx.spec
        tr = spec.trainer
        if tr.devices > 1:  # N devices exist before Keras (and its framework) start (a no-op when done already)
            kb = resolve_keras_backend(spec.keras_backend)
            if why_not(kb) is None:
                prepare_devices(kb, spec)
        self.placement = self.select_placement(spec)
        keras_devices.place(resolve_keras_backend(spec.keras_backend), self.placement)  # GPUs hidden on cpu
        self.keras = keras = import_keras(spec.keras_backend)
        self.kb = keras.backend.backend()
        # devices > 1: the model, optimizer and metrics are built in the replicas' scope, and fit runs in it
        self.replicas = Replicas(keras, tr.devices, self.placement) if tr.devices > 1 else None
        if self.replicas is not None and ctx.user_model is not None:
            raise NotSupportedError("fit(model=...) with trainer.devices > 1 on backend 'keras': the model must be "
                                    "built on the devices; pass it as model.factory (called inside the "
                                    "distribution scope) or train on one device")
        keras.utils.set_random_seed(spec.seed)
        if spec.trainer.deterministic and self.kb == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        self.loss_name = spec.resolved_loss()
        self.precision = tr.precision
        with self._scope():
            self._build(ctx, spec, tr)
        self.steps_done = 0
        # The lr schedule: torch's formulas in pure Python (unified.schedules), applied to the optimizer's
        # learning-rate variable from the bridge. `scheduler` has state_dict() / load_state_dict().
        from unified.schedules import Schedule, check_monitor_available, plan_schedule

        self.loop = LoopPlan.of(spec, ctx.dataset.steps_per_epoch() if ctx.dataset is not None else None)
        self.schedule_plan = plan_schedule(spec, self.loop.batches_per_epoch)
        check_monitor_available(self.schedule_plan, ctx.has_val)
        self.scheduler = Schedule(self.schedule_plan) if self.schedule_plan is not None else None
        self.stepper = SchedulerStepper(self.schedule_plan, lambda metric: self.set_lr(self.scheduler.step(metric)))
        self.lr_now = float(spec.optimizer.lr)  # what the optimizer's learning-rate variable holds
        self.step_lr: Optional[float] = None  # the lr the last optimizer step used (what `lr` logs)
        # exact resume (restore() sets these; fit() and the bridge read them)
        self._resume_at: Optional[tuple[int, int]] = None  # (0-based epoch, optimizer steps of it done)
        self.batch_offset = 0  # batches of the current epoch done before this fit() call
        self.final_fit = True  # whether this fit() call ends training (on_train_end -> fit_end)
        self.fit_begun = False
        self.fit_ended = False

    def _build(self, ctx: RunContext, spec: Any, tr: Any) -> None:
        """The network, its wrapper and the optimizer, compiled (in the replicas' scope when devices > 1)."""
        keras = self.keras
        # bf16-mixed / 16-mixed: Keras's mixed_bfloat16 / mixed_float16 policy, set only while the network's
        # layers are created (each layer keeps the policy it was built with), then restored, so it never leaks
        # into a later run. Weights stay float32; 16-mixed outputs are cast to float32 (the loss, the metrics).
        with _dtype_policy(keras, _POLICIES.get(self.precision)):
            self.net, self.kind = self._build_net()
        # A user's model ending in softmax / sigmoid trains on its probabilities (adapters/keras_outputs.py).
        self.probs = output_activation(keras, self.net) if self.kind == "keras" else None
        self.model = _wrap(keras, self.net, self.replicas, float32_out=self.precision == "16-mixed")
        sample_shape = getattr(ctx.dataset, "sample_shape", None) if ctx.dataset is not None else None
        if sample_shape is not None:
            dtype = np.int64 if getattr(ctx.dataset, "input_dtype", "float32") == "int64" else np.float32
            self.model(np.zeros((1, *sample_shape), dtype=dtype))  # builds every layer
            if ctx.plan is not None:
                self.set_weights(ctx.plan.weights)
        from unified.adapters.keras_optim import make_keras_optimizer

        # Accumulation and clipping live in the optimizer (torch's semantics, see keras_optim.py).
        step_kwargs: dict[str, Any] = {}
        if tr.accumulate_grad_batches > 1:
            step_kwargs["accumulate"] = tr.accumulate_grad_batches
            step_kwargs["epoch_batches"] = ctx.dataset.steps_per_epoch() if ctx.dataset is not None else None
        if tr.gradient_clip_norm is not None:
            step_kwargs["clip_norm"] = tr.gradient_clip_norm
        self.optimizer = make_keras_optimizer(spec.optimizer, **step_kwargs)
        if self.precision == "16-mixed":  # float16 gradients need loss scaling (torch.amp.GradScaler's rule)
            from unified.adapters.keras_optim import TorchLossScaleOptimizer

            self.optimizer = TorchLossScaleOptimizer(self.optimizer)
        # TensorFlow / torch: no XLA (the order of float32 operations torch's CPU kernels use, see
        # keras_optim.py). JAX: the train step is one jax.jit function, as Keras runs it by default; without
        # it every operation of the step is dispatched on its own (~10x slower per step).
        # devices > 1: each sample is weighted 1 / len(global batch) and the loss sums (keras_replicas.py), so
        # the replicas' summed (TensorFlow) or global (JAX) gradient is that of the global batch's mean loss.
        loss = self._keras_loss("sum" if self.replicas is not None else "sum_over_batch_size")
        self.model.compile(optimizer=self.optimizer, loss=loss, jit_compile=self.kb == "jax")

    # -- model ---------------------------------------------------------------------------------------
    def _build_net(self) -> tuple[Any, str]:
        ctx, keras = self.ctx, self.keras
        if ctx.user_model is not None:
            return self._adopt(ctx.user_model, "the model passed to fit()")
        if isinstance(ctx.plan, ModelPlan):
            return _mlp(keras, ctx.plan), "plan"
        if ctx.plan is not None:  # an N-D arch (cnn, resnet, lstm, gru, transformer): unified.adapters.keras_archs
            from unified.adapters.keras_archs import build_keras

            return build_keras(keras, ctx.plan), "arch"
        assert ctx.dataset is not None
        fn = import_target(ctx.spec.model.factory, "model.factory")
        obj = call_factory(fn, in_features=ctx.dataset.in_features, out_features=ctx.dataset.out_features,
                           task=ctx.spec.task, kwargs=ctx.spec.model.kwargs)
        return self._adopt(obj, f"factory {ctx.spec.model.factory!r}")

    def _adopt(self, obj: Any, where: str) -> tuple[Any, str]:
        keras = self.keras
        if isinstance(obj, keras.Model) or isinstance(obj, keras.layers.Layer):
            return obj, "keras"
        torch_nn = sys.modules.get("torch.nn")
        if torch_nn is not None and isinstance(obj, torch_nn.Module):
            if self.kb != "torch":
                raise NotSupportedError(
                    f"{where} returned a torch.nn.Module; Keras trains it only on keras_backend 'torch' "
                    f"(through keras.layers.TorchModuleWrapper), not on {self.kb!r}: set keras_backend: torch "
                    f"or use backend lightning / ignite"
                )
            if self.precision != "32":
                raise NotSupportedError(f"{where} returned a torch.nn.Module: Keras's mixed precision policy does not "
                                        f"reach inside it; train it with trainer.precision: '32', or with lightning / "
                                        f"ignite for {self.precision}")
            return keras.layers.TorchModuleWrapper(obj), "torch"
        raise SpecError(f"{where} returned {type(obj).__module__}.{type(obj).__name__}; backend 'keras' trains a "
                        f"keras.Model (or a torch.nn.Module on keras_backend torch)",
                        path=None if self.ctx.user_model is not None else "model.factory")

    def _keras_loss(self, reduction: str = "sum_over_batch_size") -> Any:
        losses, r = self.keras.losses, reduction
        return {
            "cross_entropy": lambda: losses.SparseCategoricalCrossentropy(from_logits=self.probs is None, reduction=r),
            "bce_with_logits": lambda: losses.BinaryCrossentropy(from_logits=self.probs is None, reduction=r),
            "mse": lambda: losses.MeanSquaredError(reduction=r),
            "mae": lambda: losses.MeanAbsoluteError(reduction=r),
            "huber": lambda: losses.Huber(delta=1.0, reduction=r),
        }[self.loss_name]()

    def _scope(self) -> Any:
        """The replicas' scope (devices > 1), else nothing."""
        return self.replicas.scope() if self.replicas is not None else contextlib.nullcontext()

    def _stream(self, data: Any) -> Any:
        """The training stream fit() walks: ``_train_data``'s, split over the replicas when devices > 1."""
        return self.replicas.train_stream(data) if self.replicas is not None else data

    # -- data ----------------------------------------------------------------------------------------
    def _targets(self, y: np.ndarray) -> np.ndarray:
        # A [b] target meets the model's [b, 1] output (binary, single-output regression).
        if self.ctx.spec.task != "classification" and y.ndim == 1:
            return y.reshape(-1, 1).astype(np.float32)
        return y

    def _train_data(self, epochs: int, start: int = 0, skip: int = 0) -> Any:
        """Every epoch's canonical batches as one stream; fit(steps_per_epoch=...) walks it epoch by epoch.

        ``start``/``skip`` (resume): begin at 0-based epoch ``start``, without its first ``skip`` batches.
        """
        ds = self.ctx.dataset
        assert ds is not None
        if not ds.train.in_memory:  # fetched per batch (memory map, image files, augmentation), workers ahead
            def fetched() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for e in range(start, epochs):
                    batches = ds.epoch_batches(e)[skip if e == start else 0:]
                    for xb, yb in ds.iter_batches("train", batches, e):
                        yield xb, self._targets(yb)

            if self.kb == "tensorflow":
                import tensorflow as tf

                y0 = self._targets(ds.train.y[:1])
                signature = (tf.TensorSpec((None, *ds.sample_shape), ds.input_dtype),
                             tf.TensorSpec((None, *y0.shape[1:]), y0.dtype))
                return tf.data.Dataset.from_generator(fetched, output_signature=signature).prefetch(1)
            return fetched()
        x, y = _model_input(ds.train.x), self._targets(ds.train.y)
        batches = [b for e in range(start, epochs) for b in ds.epoch_batches(e)][skip:]
        if self.kb == "tensorflow":
            import tensorflow as tf

            flat = np.concatenate(batches).astype(np.int64)
            lengths = np.array([len(b) for b in batches], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            tx, ty, tflat = tf.constant(x), tf.constant(y), tf.constant(flat)

            def take(start: Any, length: Any) -> Any:
                idx = tf.slice(tflat, [start], [length])
                return tf.gather(tx, idx), tf.gather(ty, idx)

            return (tf.data.Dataset.from_tensor_slices((starts, lengths)).map(take)
                    .prefetch(tf.data.AUTOTUNE))
        if self.kb == "torch":
            import torch
            from torch.utils.data import DataLoader

            class _Split(torch.utils.data.Dataset):
                def __init__(self) -> None:
                    self.x, self.y = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))

                def __len__(self) -> int:
                    return len(self.x)

                def __getitem__(self, idx: Any) -> Any:
                    return self.x[idx], self.y[idx]

            return DataLoader(_Split(), sampler=[torch.from_numpy(b) for b in batches], batch_size=None)

        def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for b in batches:
                yield x[b], y[b]

        return gen()

    # -- training ------------------------------------------------------------------------------------
    def fit(self) -> None:
        ctx, spec = self.ctx, self.ctx.spec
        if ctx.user_loaders:
            raise NotSupportedError("backend 'keras' takes numpy arrays or the spec's data, not native loaders yet")
        assert ctx.dataset is not None
        ctx.events.bind(self, self.current_lr)
        spe = ctx.dataset.steps_per_epoch()  # batches; optimizer steps are one per accumulation window
        epochs = self.loop.epochs
        bridge = _bridge_callbacks(self.keras, _make_bridge(self.keras, self), self.model)
        start, skip = 0, 0
        if self._resume_at is not None:
            # Resume: Keras's own initial_epoch for whole epochs; a partly done epoch first runs its
            # remaining batches as a fit() of its own (one epoch of spe - skip steps), then the rest.
            start, done = self._resume_at
            skip = min(done * spec.trainer.accumulate_grad_batches, spe)
            self._resume_at = None
        try:
            if skip:
                self.batch_offset, self.final_fit = skip, start + 1 >= epochs
                with self._scope():
                    self.model.fit(self._stream(self._train_data(start + 1, start, skip)), epochs=start + 1,
                                   initial_epoch=start, steps_per_epoch=spe - skip, shuffle=False, verbose=0,
                                   callbacks=bridge)
                self.batch_offset, self.final_fit = 0, True
                start += 1
                if self.model.stop_training or start >= epochs:
                    if not self.fit_ended:
                        ctx.events.fit_end()
                    return
            with self._scope():
                self.model.fit(self._stream(self._train_data(epochs, start)), epochs=epochs, initial_epoch=start,
                               steps_per_epoch=spe, shuffle=False, verbose=0, callbacks=bridge)
        except BaseException as e:
            ctx.events.exception(e)
            raise

    def current_lr(self) -> float:
        """The lr of the last optimizer step (before the schedule moved it): a Python float, no read."""
        return self.step_lr if self.step_lr is not None else self.lr_now

    def set_lr(self, value: float) -> None:
        """Put ``value`` into the optimizer's learning-rate variable (only when it changes)."""
        if value != self.lr_now:
            self.sync_state()  # JAX: else the next step would still run on the state holding the old lr
            self.optimizer.learning_rate = value
            self.lr_now = value

    def sync_state(self) -> None:
        """JAX only: make the Keras variables hold the training state, and the next step re-read them.

        Keras's JAX fit trains statelessly: between steps the current weights, optimizer variables (the
        learning rate among them) and metric variables live in the trainer's state, the variables
        themselves are emptied, and they are written back only at an epoch's end. Anything that reads or
        writes variables in the middle of an epoch (a scheduler step, get_weights / set_weights, a
        checkpoint after a signal, a user callback) goes through here first: ``jax_state_sync`` writes the
        state back (device arrays are re-attached, not copied to the host) and makes the next step start
        from the variables again. A no-op outside a JAX fit and when already synced.
        """
        if self.kb == "jax":
            self.model.jax_state_sync()

    def evaluate(self, split: str = "val") -> dict[str, float]:
        ds = self.ctx.dataset
        data = getattr(ds, split, None) if ds is not None else None
        if data is None:
            return {}
        self.sync_state()
        acc = self.ctx.accumulator(split)
        batches = ds.eval_batches(split)
        for idx, (xb, yb) in zip(batches, ds.iter_batches(split, batches)):  # in RAM: x[idx]; else fetched
            out = to_logits(np.asarray(self._predict_batch(_model_input(xb)), dtype=np.float32), self.probs)
            acc.update(out, yb, _np_eval_loss_sum(self.loss_name, out, yb), len(idx))
        return acc.compute()

    def _predict_batch(self, xb: np.ndarray) -> np.ndarray:
        if self.kb == "jax" and self.replicas is None:  # Keras's jitted predict step (called eagerly, each op
            return np.asarray(self.model.predict_on_batch(xb), dtype=np.float32)  # is dispatched on its own)
        out = self.model(xb, training=False)
        if self.precision != "32":
            out = self.keras.ops.cast(out, "float32")  # bf16 outputs under mixed_bfloat16
        return self.keras.ops.convert_to_numpy(out)

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.sync_state()
        outs = [self._predict_batch(_model_input(x[i:i + 1024]))
                for i in range(0, len(x), 1024)]
        return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)

    # -- weights and checkpoints -----------------------------------------------------------------------
    def _named_variables(self) -> list[tuple[str, Any, bool]]:
        """(portable name, variable, transpose?) in PyTorch naming where the model has one."""
        if self.kind == "plan":
            dense = [layer for layer in self.net.layers if isinstance(layer, self.keras.layers.Dense)]
            out = []
            for i, layer in enumerate(dense):
                out += [(f"layers.{i}.weight", layer.kernel, True), (f"layers.{i}.bias", layer.bias, False)]
            return out
        return [(v.path, v, False) for v in self.net.weights]

    def get_weights(self) -> dict[str, np.ndarray]:
        self.sync_state()
        if self.kind == "torch":
            return {k: v.detach().cpu().numpy().copy() for k, v in self.net.module.state_dict().items()}
        if self.kind == "arch":
            from unified.adapters.keras_archs import torch_named_weights

            return torch_named_weights(self.net)
        ops = self.keras.ops
        return {name: (ops.convert_to_numpy(v).T if t else ops.convert_to_numpy(v)).copy()
                for name, v, t in self._named_variables()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.sync_state()
        if self.kind == "torch":
            import torch

            self.net.module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
            return
        if self.kind == "arch":
            from unified.adapters.keras_archs import load_torch_weights

            load_torch_weights(self.net, weights)
            return
        named = self._named_variables()
        missing = [n for n, _, _ in named if n not in weights]
        if missing:
            raise SpecError(f"weights lack {missing[0]!r} (and {len(missing) - 1} more)")
        for name, var, t in named:
            value = np.asarray(weights[name], dtype=np.float32)
            var.assign(value.T if t else value)

    def save_checkpoint(self, path: str) -> None:
        # The native Keras format: a .keras zip of the trained network (architecture + weights), which
        # keras.saving.load_model reads (it ignores the extra members). A network Keras cannot serialise
        # (a wrapped torch module) goes in a zip as model.weights.h5 only. Either way the zip also holds
        # unified/state.json + unified/arrays.npz: the optimizer's variables (slots, iteration count, lr),
        # the lr schedule's state and the facade's run state, which exact resume restores.
        import zipfile

        from unified.resume import pack_state

        self.sync_state()
        saved = False
        if self.kind != "torch":
            tmp = path + ".keras"  # Keras insists on the suffix
            try:
                self.net.save(tmp)
                saved = True
            except (NotImplementedError, TypeError, ValueError):
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if not saved:
            tmp = path + ".zip"
            h5 = path + ".weights.h5"
            try:
                self._weights_holder().save_weights(h5)
                with zipfile.ZipFile(tmp, "w") as zf:
                    zf.write(h5, "model.weights.h5")
            finally:
                if os.path.exists(h5):
                    os.unlink(h5)
        ops = self.keras.ops
        sched = getattr(self, "scheduler", None)
        text, arrays = pack_state({
            "backend": "keras", "keras_backend": self.kb,
            "run": self.ctx.events.resume_state(),
            "optimizer": {"names": [v.path for v in self.optimizer.variables],
                          "values": [np.asarray(ops.convert_to_numpy(v)) for v in self.optimizer.variables]},
            "scheduler": sched.state_dict() if sched is not None else None,
            "lr_now": getattr(self, "lr_now", None),  # the Python float the lr log shows (the variable may be float32)
        })
        try:
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr("unified/state.json", text)
                buf = io.BytesIO()
                np.savez(buf, **arrays)
                zf.writestr("unified/arrays.npz", buf.getvalue())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _weights_holder(self) -> Any:
        # A wrapped torch module (TorchModuleWrapper) is a layer without save_weights: its model has them.
        return self.net if hasattr(self.net, "save_weights") else self.model

    @classmethod
    def read_checkpoint(cls, path: Any, spec: Any) -> tuple[dict[str, Any], Any]:
        import zipfile

        from unified.resume import unpack_state

        if not zipfile.is_zipfile(path):
            raise SpecError(f"--resume {path}: not a Keras checkpoint written by unified-trainer (not a .keras zip)")
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "unified/state.json" not in names or "model.weights.h5" not in names:
                raise SpecError(f"--resume {path}: not a Keras checkpoint written by unified-trainer "
                                f"(no unified/state.json + model.weights.h5)")
            text = zf.read("unified/state.json").decode("utf-8")
            with np.load(io.BytesIO(zf.read("unified/arrays.npz"))) as f:
                arrays = {k: f[k] for k in f.files}
        blob = unpack_state(text, arrays)
        return blob["run"], {"path": str(path), "blob": blob}

    def restore(self, payload: Any, run_state: dict[str, Any]) -> None:
        import shutil
        import tempfile
        import zipfile

        blob = payload["blob"]
        with tempfile.TemporaryDirectory() as d:
            h5 = os.path.join(d, "model.weights.h5")
            with zipfile.ZipFile(payload["path"]) as zf, zf.open("model.weights.h5") as src, open(h5, "wb") as dst:
                shutil.copyfileobj(src, dst)
            try:
                self._weights_holder().load_weights(h5)
            except (ValueError, KeyError) as e:
                raise SpecError(f"--resume {payload['path']}: the checkpoint's weights do not fit this model: "
                                f"{str(e).strip().splitlines()[0]}") from None
        opt = self.optimizer
        if not opt.built:
            with self._scope():  # devices > 1: its variables are mirrored / replicated like the model's
                opt.build(self.model.trainable_variables)
        values, names = blob["optimizer"]["values"], blob["optimizer"]["names"]
        have = list(opt.variables) if values else []  # [] : saved before the optimizer's first step
        if len(have) != len(values) or any(tuple(v.shape) != tuple(np.shape(a)) for v, a in zip(have, values)):
            raise SpecError(f"--resume {payload['path']}: the checkpoint's optimizer state ({len(values)} variables: "
                            f"{', '.join(names[:3])}...) does not fit optimizer {self.ctx.spec.optimizer.name!r} "
                            f"({len(have)} variables)")
        for var, value in zip(have, values):
            var.assign(np.asarray(value).astype(var.dtype) if hasattr(var, "dtype") else value)
        sched = getattr(self, "scheduler", None)
        if sched is not None and blob.get("scheduler") is not None:
            sched.load_state_dict(blob["scheduler"])
        if hasattr(self, "lr_now"):
            held = float(self.keras.ops.convert_to_numpy(opt.learning_rate))
            saved = blob.get("lr_now")
            # the logged lr as it was (JAX keeps it in float32: 0.05 would come back as 0.0500000007)
            self.lr_now = float(saved) if saved is not None and np.float32(saved) == np.float32(held) else held
        self.steps_done = int(run_state["global_step"])
        from unified.resume import resume_position

        spe = self.ctx.events.state.steps_per_epoch
        self._resume_at = resume_position(run_state, spe)

    def native_model(self) -> Any:
        return self.net

    def float32_model(self) -> Any:
        """The trained network computing in float32 (what export writes): ``self.net`` when trained in float32.

        Under ``bf16-mixed`` / ``16-mixed`` each layer keeps its mixed dtype policy (bfloat16 / float16 compute,
        float32 variables); the export is a float32 graph of the same float32 weights, as Lightning's
        ``to_onnx`` of an autocast-trained model. Built-in archs are built again without the policy and given
        the trained weights; a user's Keras model is cloned with every layer's ``dtype`` set to float32 and
        the weights copied (a model Keras cannot clone, a subclassed one, raises NotSupportedError).
        """
        if self.precision == "32" or self.kind == "torch":  # a torch.nn.Module trains in float32 only
            return self.net
        keras = self.keras
        with _dtype_policy(keras, "float32"):
            if self.kind == "arch":
                from unified.adapters.keras_archs import build_keras, load_torch_weights

                net = build_keras(keras, self.ctx.plan)
                load_torch_weights(net, self.get_weights())
                return net
            self.sync_state()
            try:
                if self.kind == "plan":
                    net = _mlp(keras, self.ctx.plan)
                    net.build((None, *self.ctx.dataset.sample_shape))
                else:
                    net = keras.models.clone_model(
                        self.net, clone_function=lambda layer: layer.__class__.from_config(
                            _float32_config(layer.get_config())))
                net.set_weights(self.net.get_weights())
            except (ValueError, TypeError, NotImplementedError, AttributeError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise NotSupportedError(f"cannot export the {self.precision} Keras model as float32: Keras cannot "
                                        f"clone it with a float32 dtype policy ({type(e).__name__}: {first}); "
                                        f"build it from layers (functional / Sequential) or train with "
                                        f"trainer.precision: '32'") from None
        return net


def _float32_config(config: Any) -> Any:
    """A layer config with every mixed dtype policy (at any depth: wrappers, nested models) set to float32."""
    if isinstance(config, dict):
        return {k: "float32" if k == "dtype" and _mixed_policy(v) else _float32_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def _mixed_policy(value: Any) -> bool:
    """Whether a config's ``dtype`` entry is a mixed policy (a name or a serialized ``DTypePolicy``)."""
    if isinstance(value, dict):
        value = value.get("config", {}).get("name") if isinstance(value.get("config"), dict) else None
    return isinstance(value, str) and value.startswith("mixed_")


_POLICIES = {"bf16-mixed": "mixed_bfloat16", "16-mixed": "mixed_float16"}  # trainer.precision -> Keras dtype policy


class _dtype_policy:
    """Set Keras's global dtype policy to ``name`` inside the block (no-op for ``None``), then restore it."""

    def __init__(self, keras: Any, name: Optional[str]) -> None:
        self.keras, self.name, self.saved = keras, name, None

    def __enter__(self) -> None:
        if self.name is not None:
            self.saved = self.keras.config.dtype_policy()
            self.keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc: Any) -> None:
        if self.name is not None:
            self.keras.config.set_dtype_policy(self.saved)


def _model_input(x: np.ndarray) -> np.ndarray:
    """Contiguous float32 model input; integer token ids stay int64 (embedding lookups)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x, dtype=np.int64 if x.dtype == np.int64 else np.float32)


def _mlp(keras: Any, plan: ModelPlan) -> Any:
    layers: list[Any] = []
    for i, width in enumerate(plan.widths[1:]):
        last = i == plan.num_layers - 1
        layers.append(keras.layers.Dense(width, activation=None if last else plan.activation, name=f"dense_{i}"))
        if not last and plan.dropout > 0:
            layers.append(keras.layers.Dropout(plan.dropout))
    return keras.Sequential(layers, name="mlp")


def _wrap(keras: Any, net: Any, replicas: Optional[Replicas], float32_out: bool = False) -> Any:
    """A keras.Model around ``net`` that also reports the last batch's loss (``batch_loss`` in the logs).

    Keras logs the running mean of the epoch's loss; the facade logs each step's own loss, as the
    torch trainers do. Overriding ``compute_loss`` with a metric is the backend-neutral way (the
    pattern of Keras's own docs), so it works under tf.function, torch and JAX alike.

    ``float32_out`` (16-mixed): the network's float16 outputs are cast to float32 (as torch's autocast
    leaves the loss in float32), so the loss, the logged values and the metrics are float32.
    """

    jax_backend = keras.backend.backend() == "jax"

    class _LastValue(keras.metrics.Metric):
        def __init__(self, name: str = "batch_loss") -> None:
            super().__init__(name=name)
            # only_first_replica: with several replicas (TensorFlow) every replica holds the global value
            # (keras_replicas.Replicas.reduce_logged), and a read takes the first's instead of summing them
            self.value = self.add_variable(shape=(), initializer="zeros", name="value", aggregation="only_first_replica")

        def update_state(self, value: Any) -> None:
            self.value.assign(keras.ops.cast(value, self.value.dtype))

        def result(self) -> Any:
            # On JAX the train step runs stateless inside jax.jit: the variable object itself would leave
            # the jitted function (its value purged), so hand out its value (the step's scope value).
            return keras.ops.convert_to_tensor(self.value) if jax_backend else self.value

        def reset_state(self) -> None:
            self.value.assign(0.0)

    class UnifiedKerasModel(keras.Model):
        def __init__(self, inner: Any) -> None:
            super().__init__(name="unified")
            self.inner = inner
            self.batch_loss = _LastValue()

        def call(self, x: Any, training: bool = False) -> Any:
            out = self.inner(x, training=training)
            return keras.ops.cast(out, "float32") if float32_out else out

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            if training:
                # devices > 1 on TensorFlow: a replica's loss is its share of the global mean; log their sum
                self.batch_loss.update_state(loss if replicas is None else replicas.reduce_logged(loss))
            return loss

        @property
        def metrics(self) -> list[Any]:
            return [*super().metrics, self.batch_loss]

        def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> Any:
            # TensorFlow, several replicas: Keras builds from the first distributed batch averaged over the
            # replicas, which fails when their shares differ in size (an odd global batch); build from the
            # first replica's share instead (only the shapes matter).
            if replicas is None or replicas.kb != "tensorflow" or iterator is None:
                return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
            strategy = replicas.strategy
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
            with strategy.scope():
                self._symbolic_build(data_batch=data_batch)

    return UnifiedKerasModel(net)


def _bridge_callbacks(keras: Any, bridge: Any, model: Any) -> Any:
    """What ``fit(callbacks=...)`` gets. On JAX, a ``CallbackList`` that hands the bridge each step's logs as they
    are: Keras's own converts every log to a Python float before a batch hook (``pythonify_logs``), a host
    sync per step that stalls JAX's asynchronous dispatch, while the bridge reads the loss only on logging
    steps (unified/events.py). On JAX the logs are immutable device arrays (``_LastValue.result``), so holding
    one is safe; on TensorFlow / torch they hold the variables themselves, so Keras's conversion stays."""
    if keras.backend.backend() != "jax":
        return [bridge]

    class _RawBatchLogs(keras.callbacks.CallbackList):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            for cb in self.callbacks:
                cb.on_train_batch_end(batch, logs)

    return _RawBatchLogs([bridge], add_history=True, model=model)  # add_history: fit() returns model.history


def _make_bridge(keras: Any, adapter: KerasAdapter) -> Any:
    events, loop, stepper, sched = adapter.ctx.events, adapter.loop, adapter.stepper, adapter.scheduler
    accumulate, spe = loop.accumulate, loop.batches_per_epoch

    class _Bridge(keras.callbacks.Callback):
        """Turns Keras's callback hooks into the facade's events; drives the lr schedule."""

        def on_train_begin(self, logs: Any = None) -> None:
            if adapter.fit_begun:
                return  # the second fit() call of a resumed run (see KerasAdapter.fit)
            adapter.fit_begun = True
            if sched is not None:
                adapter.set_lr(sched.lr)  # the schedule's first lr (also after a resumed schedule state)
            events.fit_start()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.batches = 0
            events.epoch_start(epoch + 1)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            batch += adapter.batch_offset  # a resumed epoch's first fit() starts after its done batches
            self.batches = batch + 1
            loss = logs["batch_loss"]
            if accumulate > 1:
                # The optimizer (keras_optim) steps when the window closes; train/loss of that step is the
                # mean of its micro-batch losses.
                adapter.add_micro_loss(loss)
                if not loop.closes(batch):
                    return
                loss = adapter.take_step_loss()
            adapter.steps_done += 1
            adapter.step_lr = adapter.lr_now
            stepper.after_optimizer_step()
            if events.train_batch_end(loss, adapter.steps_done, batch):
                self.model.stop_training = True  # Keras still calls on_epoch_end: the partial epoch is validated

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            stepper.before_validation(self.batches == spe)
            val = adapter.evaluate("val") if adapter.ctx.has_val else None
            stop = events.epoch_end(val)
            stepper.after_epoch_end(events.state.metrics)
            if stop:
                self.model.stop_training = True

        def on_train_end(self, logs: Any = None) -> None:
            if adapter.final_fit or self.model.stop_training:
                adapter.fit_ended = True
                events.fit_end()

    return _Bridge()
