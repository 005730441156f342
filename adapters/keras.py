"""Keras 3 backend: ``keras.Model.fit`` on TensorFlow, PyTorch or JAX, hooks as a Keras Callback.

Keras picks its tensor backend once per process (``KERAS_BACKEND`` before ``import keras``); the
adapter sets it from ``spec.keras_backend`` when Keras is not imported yet and refuses a different
one afterwards (run that backend in another process: ``unified run --keras-backend ...``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from typing import Any, Iterator, Optional

import numpy as np

from adapters.base import BackendAdapter
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
        extra = "keras" if want == "tensorflow" else f"keras,{'ignite' if want == 'torch' else want}"
        raise BackendUnavailableError(
            f"keras_backend {want!r} needs the {KERAS_BACKENDS[want]} package: pip install \"unified-trainer[{extra}]\""
            + (" (and jax)" if want == "jax" else "")
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
        self.keras = keras = import_keras(spec.keras_backend)
        self.kb = keras.backend.backend()
        keras.utils.set_random_seed(spec.seed)
        if spec.trainer.deterministic and self.kb == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        self.loss_name = spec.resolved_loss()
        self.net, self.kind = self._build_net()
        self.model = _wrap(keras, self.net, self._keras_loss())
        in_features = ctx.dataset.in_features if ctx.dataset is not None else None
        if in_features is not None:
            self.model(np.zeros((1, in_features), dtype=np.float32))  # builds every layer
            if ctx.plan is not None:
                self.set_weights(ctx.plan.weights)
        from adapters.keras_optim import make_keras_optimizer

        self.optimizer = make_keras_optimizer(spec.optimizer)
        self.model.compile(optimizer=self.optimizer, loss=self._keras_loss(), jit_compile=False)
        self.steps_done = 0

    # -- model ---------------------------------------------------------------------------------------
    def _build_net(self) -> tuple[Any, str]:
        ctx, keras = self.ctx, self.keras
        if ctx.user_model is not None:
            return self._adopt(ctx.user_model, "the model passed to fit()")
        if ctx.plan is not None:
            return _mlp(keras, ctx.plan), "plan"
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
            return keras.layers.TorchModuleWrapper(obj), "torch"
        raise SpecError(f"{where} returned {type(obj).__module__}.{type(obj).__name__}; backend 'keras' trains a "
                        f"keras.Model (or a torch.nn.Module on keras_backend torch)",
                        path=None if self.ctx.user_model is not None else "model.factory")

    def _keras_loss(self) -> Any:
        losses = self.keras.losses
        return {
            "cross_entropy": lambda: losses.SparseCategoricalCrossentropy(from_logits=True),
            "bce_with_logits": lambda: losses.BinaryCrossentropy(from_logits=True),
            "mse": lambda: losses.MeanSquaredError(),
            "mae": lambda: losses.MeanAbsoluteError(),
            "huber": lambda: losses.Huber(delta=1.0),
        }[self.loss_name]()

    # -- data ----------------------------------------------------------------------------------------
    def _targets(self, y: np.ndarray) -> np.ndarray:
        # A [b] target meets the model's [b, 1] output (binary, single-output regression).
        if self.ctx.spec.task != "classification" and y.ndim == 1:
            return y.reshape(-1, 1).astype(np.float32)
        return y

    def _train_data(self, epochs: int) -> Any:
        """Every epoch's canonical batches as one stream; fit(steps_per_epoch=...) walks it epoch by epoch."""
        ds = self.ctx.dataset
        assert ds is not None
        x, y = np.ascontiguousarray(ds.train.x, dtype=np.float32), self._targets(ds.train.y)
        batches = [b for e in range(epochs) for b in ds.epoch_batches(e)]
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
        spe = ctx.dataset.steps_per_epoch()
        max_steps = spec.trainer.max_steps
        epochs = -(-max_steps // spe) if max_steps is not None else spec.trainer.max_epochs
        bridge = _make_bridge(self.keras, self, max_steps)
        try:
            self.model.fit(self._train_data(epochs), epochs=epochs, steps_per_epoch=spe, shuffle=False, verbose=0,
                           callbacks=[bridge])
        except BaseException as e:
            ctx.events.exception(e)
            raise

    def current_lr(self) -> float:
        lr = self.optimizer.learning_rate
        return float(self.keras.ops.convert_to_numpy(lr))

    def evaluate(self, split: str = "val") -> dict[str, float]:
        ds = self.ctx.dataset
        data = getattr(ds, split, None) if ds is not None else None
        if data is None:
            return {}
        acc = self.ctx.accumulator(split)
        for idx in ds.eval_batches(split):
            xb = np.ascontiguousarray(data.x[idx], dtype=np.float32)
            out = np.asarray(self._predict_batch(xb), dtype=np.float32)
            acc.update(out, data.y[idx], _np_eval_loss_sum(self.loss_name, out, data.y[idx]), len(idx))
        return acc.compute()

    def _predict_batch(self, xb: np.ndarray) -> np.ndarray:
        return self.keras.ops.convert_to_numpy(self.model(xb, training=False))

    def predict(self, x: np.ndarray) -> np.ndarray:
        outs = [self._predict_batch(np.ascontiguousarray(x[i:i + 1024], dtype=np.float32))
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
        if self.kind == "torch":
            return {k: v.detach().cpu().numpy().copy() for k, v in self.net.module.state_dict().items()}
        ops = self.keras.ops
        return {name: (ops.convert_to_numpy(v).T if t else ops.convert_to_numpy(v)).copy()
                for name, v, t in self._named_variables()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        if self.kind == "torch":
            import torch

            self.net.module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
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
        # keras.saving.load_model reads; a network Keras cannot serialise (a wrapped torch module) is
        # saved as Keras weights (.weights.h5 content). Optimizer state is not included yet.
        if self.kind != "torch":
            tmp = path + ".keras"  # Keras insists on the suffix
            try:
                self.net.save(tmp)
                os.replace(tmp, path)
                return
            except (NotImplementedError, TypeError, ValueError):
                if os.path.exists(tmp):
                    os.unlink(tmp)
        tmp = path + ".weights.h5"
        self.net.save_weights(tmp)
        os.replace(tmp, path)

    def native_model(self) -> Any:
        return self.net


def _mlp(keras: Any, plan: ModelPlan) -> Any:
    layers: list[Any] = []
    for i, width in enumerate(plan.widths[1:]):
        last = i == plan.num_layers - 1
        layers.append(keras.layers.Dense(width, activation=None if last else plan.activation, name=f"dense_{i}"))
        if not last and plan.dropout > 0:
            layers.append(keras.layers.Dropout(plan.dropout))
    return keras.Sequential(layers, name="mlp")


def _wrap(keras: Any, net: Any, loss: Any) -> Any:
    """A keras.Model around ``net`` that also reports the last batch's loss (``batch_loss`` in the logs).

    Keras logs the running mean of the epoch's loss; the facade logs each step's own loss, as the
    torch trainers do. Overriding ``compute_loss`` with a metric is the backend-neutral way (the
    pattern of Keras's own docs), so it works under tf.function, torch and JAX alike.
    """

    class _LastValue(keras.metrics.Metric):
        def __init__(self, name: str = "batch_loss") -> None:
            super().__init__(name=name)
            self.value = self.add_variable(shape=(), initializer="zeros", name="value")

        def update_state(self, value: Any) -> None:
            self.value.assign(keras.ops.cast(value, self.value.dtype))

        def result(self) -> Any:
            return self.value

        def reset_state(self) -> None:
            self.value.assign(0.0)

    class UnifiedKerasModel(keras.Model):
        def __init__(self, inner: Any) -> None:
            super().__init__(name="unified")
            self.inner = inner
            self.batch_loss = _LastValue()

        def call(self, x: Any, training: bool = False) -> Any:
            return self.inner(x, training=training)

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            if training:
                self.batch_loss.update_state(loss)
            return loss

        @property
        def metrics(self) -> list[Any]:
            return [*super().metrics, self.batch_loss]

    return UnifiedKerasModel(net)


def _make_bridge(keras: Any, adapter: KerasAdapter, max_steps: Optional[int]) -> Any:
    events = adapter.ctx.events

    class _Bridge(keras.callbacks.Callback):
        """Turns Keras's callback hooks into the facade's events."""

        def on_train_begin(self, logs: Any = None) -> None:
            events.fit_start()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            events.epoch_start(epoch + 1)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            adapter.steps_done += 1
            events.train_batch_end(logs["batch_loss"], adapter.steps_done, batch)
            if events.state.should_stop or (max_steps is not None and adapter.steps_done >= max_steps):
                self.model.stop_training = True  # Keras still calls on_epoch_end: the partial epoch is validated

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            val = adapter.evaluate("val") if adapter.ctx.has_val else None
            if events.epoch_end(val):
                self.model.stop_training = True

        def on_train_end(self, logs: Any = None) -> None:
            events.fit_end()

    return _Bridge()
