"""Keras on several devices in one process (``trainer.devices: N > 1`` with ``backend: keras``).

* TensorFlow: ``tf.distribute.MirroredStrategy`` over N devices. On the CPU, N logical CPU devices are
  made from the physical one (``tf.config.set_logical_device_configuration``, before TensorFlow initialises
  its devices) and the strategy mirrors over ``/cpu:0`` .. ``/cpu:N-1``. The model, the optimizer and the
  metrics are created under ``strategy.scope()``; every replica runs the train step on its part of the
  global batch; the optimizer all-reduces (sums) the gradients, then takes torch's step once, in
  cross-replica context (``TorchRuleOptimizer._apply_across_replicas``), on every device's copy.
* JAX: ``keras.distribution.DataParallel`` over N devices. On the CPU, N host devices are asked from
  XLA (``jax.config.update("jax_num_cpu_devices", N)``, the configuration form of
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) before JAX initialises its backends. The train
  step is one SPMD program over the global batch, sharded along the batch axis; XLA inserts the reductions.

Which devices (:func:`pick_devices`, pure): on ``trainer.accelerator`` resolved to ``gpu``, the first N GPUs
(TensorFlow ``/device:GPU:0`` .., JAX ``gpu:0`` ..), never a CPU device; on ``cpu``, the first N (logical) CPU
devices, never a GPU. Nothing here has run on a GPU; the choice is tested with fake device listings.

The same semantics as the torch backends' DDP: ``data.batch_size`` is the global batch, split over the
replicas, and a step's loss is the **mean over the global batch**. Each sample carries the weight
``1 / len(global batch)`` and the replicas' losses are weighted *sums* (``reduction="sum"``), so the summed
(TensorFlow) or global (JAX) gradient is that of the global mean whatever the replicas' shares, an uneven
last batch included. (torch's DDP averages per-rank means, which equals this when the shares are equal.)

How a global batch of ``b`` samples is split:

* TensorFlow: ``experimental_distribute_dataset`` splits it into shares of ``ceil(b / N)`` (the last
  smaller, possibly empty: a batch smaller than N leaves some replicas without samples, contributing 0).
* JAX: the batch axis must divide by N, so a batch is padded to a multiple of N by repeating its first
  samples (as torch's ``DistributedSampler`` pads) with weight 0: the padding changes no loss or gradient.

Framework modules are imported lazily, only for ``devices > 1``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from unified.errors import NotSupportedError

KERAS_MULTI_DEVICE = ("tensorflow", "jax")  # Keras tensor backends that train on several devices


def why_not(keras_backend: str) -> Optional[str]:
    """Why ``keras_backend`` cannot train on several devices (``None`` when it can)."""
    if keras_backend in KERAS_MULTI_DEVICE:
        return None
    return (f"Keras has no data-parallel distribution on its {keras_backend} backend (keras.distribution has "
            f"no {keras_backend} implementation and fit() does not run under torch DDP); use keras_backend: "
            f"tensorflow or jax, or backend torch / lightning / ignite for torch DDP")


def _wants_gpu(spec: Any, count_gpus: Any) -> bool:
    accel = getattr(spec.trainer, "accelerator", "cpu")
    if accel == "gpu":
        return True
    return accel == "auto" and count_gpus() > 0


def prepare_devices(keras_backend: str, spec: Any) -> None:
    """Make ``trainer.devices`` devices exist before the framework initialises its devices.

    Called before Keras is imported (and before any framework probe). A no-op for ``devices: 1``.

    Raises:
        NotSupportedError: the framework was already initialised in this process with fewer devices
            (e.g. a ``devices: 1`` run before in the same Python process): run it in a new process.
    """
    n = int(spec.trainer.devices)
    if n <= 1:
        return
    if keras_backend == "tensorflow":
        import tensorflow as tf

        if _wants_gpu(spec, lambda: len(tf.config.list_physical_devices("GPU"))):
            return  # GPUs: one per device, as they are
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:  # initialised already: fine when it has enough logical CPU devices
            pass
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise NotSupportedError(
                f"trainer.devices: {n} on keras/tensorflow needs {n} logical CPU devices, but TensorFlow was already "
                f"initialised in this process with {have}; run it in a new process (unified run SPEC ...)")
    elif keras_backend == "jax":
        import jax
        from jax._src import xla_bridge

        if not xla_bridge.backends_are_initialized():
            if getattr(spec.trainer, "accelerator", "cpu") == "gpu":
                return
            # XLA_FLAGS=--xla_force_host_platform_device_count=N, as a configuration option (no environment
            # variable leaks into child processes); it only adds CPU devices, a GPU stays what it is.
            jax.config.update("jax_num_cpu_devices", max(n, int(jax.config.jax_num_cpu_devices or 1)))
        have = len(_jax_devices(jax, spec))
        if have < n:
            raise NotSupportedError(
                f"trainer.devices: {n} on keras/jax needs {n} devices, but JAX was already initialised in this "
                f"process with {have} (set XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts "
                f"its backends, or run it in a new process: unified run SPEC ...)")


def _jax_devices(jax: Any, spec: Any) -> list[Any]:
    gpus = [d for d in jax.devices() if d.platform != "cpu"]
    if gpus and _wants_gpu(spec, lambda: len(gpus)):
        return gpus
    return jax.devices("cpu")


def pick_devices(placement: Any, listing: Sequence[tuple[str, str]]) -> list[str]:
    """The names of the devices N replicas run on.

    Args:
        placement: the run's :class:`~unified.devices.Placement` (``accelerator`` ``cpu`` or ``gpu``, ``devices``).
        listing: the framework's devices in its order, as ``(kind, name)`` pairs, kind ``cpu`` or ``gpu``
            (case-insensitive): TensorFlow's logical devices ``("GPU", "/job:localhost/.../device:GPU:0")``,
            JAX's ``("gpu", "gpu:0")``.

    Returns:
        The first ``placement.devices`` names of the placement's kind, in the listing's order.

    Raises:
        NotSupportedError: fewer devices of that kind than ``placement.devices`` (one line naming both).
    """
    kind = "gpu" if placement.on_gpu else "cpu"
    names = [name for k, name in listing if k.lower() == kind]
    if len(names) < placement.devices:
        raise NotSupportedError(f"trainer.devices: {placement.devices} replicas on {kind} need {placement.devices} "
                                f"{kind.upper()} devices, but only {len(names)} are visible "
                                f"({', '.join(names) or 'none'})")
    return names[: placement.devices]


class Replicas:
    """The N replicas of one Keras run: the scope to build and train in, and the training stream's weights.

    Args:
        keras: the imported ``keras`` module.
        n: ``trainer.devices`` (> 1).
        placement: the run's :class:`~unified.devices.Placement` (GPUs on ``gpu``, CPU devices on ``cpu``).
    """

    def __init__(self, keras: Any, n: int, placement: Any) -> None:
        self.keras, self.n = keras, int(n)
        self.kb = keras.backend.backend()
        placement = dataclasses.replace(placement, devices=self.n)
        if self.kb == "tensorflow":
            import tensorflow as tf

            names = pick_devices(placement, [(d.device_type, d.name) for d in tf.config.list_logical_devices()])
            # On CPU the default cross-device ops reduce through one device; say it explicitly. On GPUs
            # MirroredStrategy picks its own (NCCL all-reduce where available).
            ops = None if placement.on_gpu else tf.distribute.ReductionToOneDevice()
            self.strategy = tf.distribute.MirroredStrategy(devices=names, cross_device_ops=ops)
            self.devices = names
        elif self.kb == "jax":
            import jax

            platform = "gpu" if placement.on_gpu else "cpu"
            try:
                listed = jax.devices(platform)
            except RuntimeError:  # JAX has no such platform: pick_devices says none is visible
                listed = []
            found = {f"{d.platform}:{d.id}": d for d in listed}  # keras.distribution's naming
            names = pick_devices(placement, [(d.platform, name) for name, d in found.items()])
            devs = [found[name] for name in names]
            self.distribution = keras.distribution.DataParallel(devices=devs)
            self.devices = [str(d) for d in devs]
        else:  # KerasAdapter.check_spec refuses it first
            raise NotSupportedError(f"trainer.devices: {n}: {why_not(self.kb)}")

    def scope(self) -> Any:
        """Build the model, optimizer and metrics, and train, inside this."""
        if self.kb == "tensorflow":
            return self.strategy.scope()
        return self.distribution.scope()

    # -- the training stream: (x, y) global batches -> (x, y, weight) with weight 1/len(global batch) ----------
    def train_stream(self, data: Any) -> Any:
        """``data`` (what ``KerasAdapter._train_data`` gives: a ``tf.data.Dataset`` on TensorFlow, a generator
        on JAX) as the replicas' stream: each sample weighted ``1 / len(its global batch)``, split over the
        replicas (TensorFlow: a distributed dataset; JAX: padded to a multiple of N with weight 0)."""
        if self.kb == "tensorflow":
            import tensorflow as tf

            def weigh(x: Any, y: Any) -> Any:
                b = tf.shape(y)[0]
                return x, y, tf.fill([b], 1.0 / tf.cast(b, tf.float32))

            return self.strategy.experimental_distribute_dataset(data.map(weigh))
        return _padded(data, self.n)

    def reduce_logged(self, value: Any) -> Any:
        """The global value of a replica's share of the loss (TensorFlow: summed over replicas)."""
        if self.kb != "tensorflow":
            return value  # JAX: the step is one program over the global batch already
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return value
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))


def _padded(batches: Iterator[tuple[np.ndarray, np.ndarray]], n: int) -> Iterator[tuple[np.ndarray, ...]]:
    for x, y in batches:
        b = len(x)
        size = -(-b // n) * n
        w = np.full(size, 1.0 / b, dtype=np.float32)
        if size != b:  # repeat the first samples (torch's DistributedSampler pads so), weight 0
            idx = np.arange(size) % b
            x, y = x[idx], y[idx]
            w[b:] = 0.0
        yield x, y, w
