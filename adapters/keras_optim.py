"""Keras 3 optimizers that follow PyTorch's update rules (SGD, Adam, AdamW, RMSprop).

Why this module exists: the spec promises that an optimizer means the same thing on every backend, and
Keras's built-in optimizers do not compute what ``torch.optim`` computes:

* ``keras.optimizers.Adam`` folds the bias corrections into the step size,
  ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, so its ``eps`` is added to the
  *uncorrected* ``sqrt(v)``; torch adds it to ``sqrt(v_hat)``: ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.
  The two differ most in the first steps and for small gradients (where ``eps`` matters).
* Keras's ``weight_decay`` is always decoupled (``p -= lr * wd * p`` before the step) for every optimizer;
  torch's ``weight_decay`` is an L2 term added to the gradient for SGD, Adam and RMSprop, and decoupled only
  for AdamW (``p *= 1 - lr * wd``).
* ``keras.optimizers.SGD`` keeps a velocity ``v = mu * v - lr * g`` (lr inside the buffer, so changing the
  learning rate acts with a lag) and its Nesterov form differs; torch keeps ``buf = mu * buf + g`` and
  applies ``lr`` afterwards.
* ``keras.optimizers.RMSprop`` adds ``eps`` inside the square root (``g / sqrt(v + eps)``) and puts ``lr``
  inside its momentum buffer; torch adds ``eps`` after the root and applies ``lr`` to the buffer.

The classes below implement torch's default CPU path (``_single_tensor_*`` in ``torch/optim/*.py``;
torch takes its ``foreach`` path only for CUDA/XPU tensors) operation by operation, in the same order of
float32 operations, with ``keras.ops`` only, so they run on every Keras backend (TensorFlow, PyTorch, JAX)
and under ``jit_compile``. Three details decide the last bits (see ``_Arith``):

* torch's CPU kernels for ``add(alpha=)``, ``lerp_`` and ``addcmul_`` use fused multiply-adds (one
  rounding). ``keras.ops`` has no FMA, so with ``emulate_fma`` (default on TensorFlow and torch) those
  steps are done in float64 and rounded once to float32; elsewhere torch rounds every op, and so does this.
* torch keeps ``lr`` as a Python float and forms ``lr / (1 - beta1**t)``, ``(1 - beta2**t) ** 0.5`` and
  AdamW's ``1 - lr * wd`` in float64, rounding to float32 where a kernel takes them. With ``emulate_fma``
  these scalars are float64 tensors too and a constant learning rate is kept in a float64 Keras variable
  (``optimizer.learning_rate = x``, LR callbacks, get_config and saving work as usual; a Keras LR schedule
  still yields float32). Without it they are float32, with ``1 - beta**t`` computed as
  ``-expm1(t * log(beta))`` to avoid its cancellation.
* scalars such as ``1 - beta2`` reach torch's kernels as float32; they are rounded the same way here.

Measured over 300 steps with a fixed gradient sequence (tests/adapters/test_keras_optim.py): bit-identical
to torch.optim on the Keras torch backend; on TensorFlow (graph/eager) 0 for SGD and <= 5e-7 for the
others, because TF's float32 ``sqrt`` is correctly rounded and torch's vectorised CPU ``sqrt`` is not
(~1 element in 5 is 1 ulp off). Under XLA (TF ``jit_compile=True``; JAX always) the compiler contracts
every ``x * y + z`` into an FMA, also where torch rounds the product first (AdamW's ``param * (1 - lr*wd)``,
SGD's ``momentum * buf``), which keras.ops cannot prevent: SGD momentum 1.4e-6, AdamW 1.4e-5 after 300
steps, the rest as without XLA. ``emulate_fma=False`` (plain float32): <= 7.2e-7 on both backends.
On JAX (``emulate_fma`` off: no float64 without ``jax_enable_x64``): eager <= 7.2e-7; ``stateless_apply``
under ``jax.jit`` (what Keras's JAX fit runs) 0 - 7.8e-7, SGD momentum 1.4e-6, AdamW 1.3e-5.

Cost: the float64 detour makes the optimizer step about 2-3x slower (Adam on 1M parameters, one CPU
thread, loaded machine: 14 -> 29 ms on the torch backend, 20 -> 40 ms on eager TensorFlow). Pass
``emulate_fma=False`` when that matters more than the last bit, e.g. on a GPU, where torch itself runs
other (``foreach``) kernels, so the CPU path is not the reference there anyway.

On the Keras torch backend none of this arithmetic runs: ``_backend_update_step`` hands all variables at
once to torch's own functional optimizer (``torch.optim.adam.adam`` / ``sgd`` / ``rmsprop`` with
``foreach=False``, the CPU path ``torch.optim`` takes), which is exact by construction and about 6x cheaper
than one keras.ops update per variable (it was most of the facade's per-step overhead against native fit).

Accumulation and clipping (``accumulate``, ``epoch_batches``, ``clip_norm``) follow Lightning / torch: each
micro-batch adds ``grad / accumulate`` to a sum, the window's last batch (every ``accumulate``-th of the epoch
and the epoch's last) clips the sum with ``clip_grad_norm_``'s formula and steps; ``iterations`` then counts
optimizer steps. Measured against torch.optim + clip_grad_norm_: tests/adapters/test_keras_accumulation.py.
The window's decision is in the compiled step on TensorFlow (``ops.cond``), in Python on torch (eager), and
a select on JAX (``_jax_window``: a ``lax.cond`` branch cannot assign variables in the stateless step).

Several replicas (TensorFlow ``MirroredStrategy``, trainer.devices > 1, adapters/keras_replicas.py): the
replicas' gradients are summed first (each replica's loss is its share of the global batch's mean), then the
step above runs once, in cross-replica context, each assignment going to every replica's copy
(``_apply_across_replicas``), so clipping sees the global gradient as torch's does after DDP's all-reduce. On
JAX (``keras.distribution.DataParallel``) the step is one program over the global batch and nothing changes.

``trainer.precision: 16-mixed`` (a GPU only): ``TorchLossScaleOptimizer``, Keras's ``LossScaleOptimizer`` with
torch's ``GradScaler`` rule, wraps one of these. Keras scales the loss; the window's close unscales the summed
gradient, checks it for inf/NaN (after TensorFlow's all-reduce), clips it unscaled, steps only when it is
finite, and updates the scale, all in the graph (``_scaled_step``; a select on JAX and on the torch backend, no
host sync). Measured: tests/adapters/test_keras_mixed.py.

Hyper-parameter names are torch's (``betas``, ``eps``, ``alpha``, ``weight_decay``) except
``learning_rate``, which Keras's base class owns. The torch-style weight decay is stored as
``torch_weight_decay``; the Keras base class always receives ``weight_decay=None`` so it never applies its
own decoupled decay on top. ``exclude_from_weight_decay(...)`` is honoured (torch's equivalent is a param
group with ``weight_decay=0``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import keras
import numpy as np
from keras import ops

from unified.adapters.base import window_closes

__all__ = ["TorchSGD", "TorchAdam", "TorchAdamW", "TorchRMSprop", "TorchLossScaleOptimizer", "make_keras_optimizer"]


def _f32(x: float) -> float:
    """The float32 value torch's CPU kernels use for a Python scalar argument (``alpha=``, ``value=``)."""
    return float(np.float32(x))


class _Arith:
    """The float32 arithmetic of one update: torch's fused multiply-adds, optionally emulated exactly.

    torch's CPU kernels for ``add(other, alpha=a)``, ``lerp_`` and ``addcmul_`` compute ``x * y + z`` with
    one rounding (a hardware FMA, vectorised and scalar tail alike). With ``wide`` set ("float64"), ``fma``
    does the same: the product of two float32 numbers is exact in float64, so only the sum is rounded
    (twice: to float64, then to float32, which differs from a single rounding only when the float64 result
    lands exactly on a float32 tie). Without it, ``fma`` rounds the product and the sum separately, which
    differs from torch in the last bit of ~1 in 10 (lerp) to 1 in 1000 (add) elements.

    Under XLA (TensorFlow ``jit_compile=True``, JAX) the compiler contracts ``x * y + z`` into an FMA on its
    own (and narrows the float64 detour back to float32), so both forms become real FMAs there.
    """

    def __init__(self, dtype: Any, emulate_fma: bool) -> None:
        self.dtype = dtype
        self.wide = "float64" if emulate_fma and keras.backend.standardize_dtype(dtype) == "float32" else None

    def fma(self, x: Any, y: Any, z: Any) -> Any:
        """``x * y + z``, rounded once (scalars must already be float32 values: pass ``_f32(s)``)."""
        if self.wide is None:
            return ops.add(ops.multiply(x, y), z)
        w = self.wide
        return ops.cast(ops.add(ops.multiply(self.wide_const(x), self.wide_const(y)), ops.cast(z, w)), self.dtype)

    def wide_const(self, x: Any) -> Any:
        """``x`` as a ``wide`` tensor. Python floats are converted explicitly: ``ops.power(0.9, t64)`` and
        friends would otherwise round 0.9 to floatx first on some backends (torch)."""
        if isinstance(x, (int, float)):
            return ops.convert_to_tensor(x, dtype=self.wide)
        return ops.cast(x, self.wide)

    def lerp(self, start: Any, end: Any, weight: float) -> Any:
        """torch's ``start.lerp_(end, weight)`` for a Python-float weight (float32 in the kernel).

        torch evaluates ``start + w * (end - start)`` for ``|w| < 0.5`` and ``end + (w - 1) * (end - start)``
        otherwise (each branch is exact at its end of [0, 1]), both as one FMA.
        """
        w = np.float32(weight)
        diff = ops.subtract(end, start)
        if abs(w) < 0.5:
            return self.fma(float(w), diff, start)
        return self.fma(float(w - np.float32(1.0)), diff, end)  # w - 1 is exact in float32

    def one_minus_pow(self, beta: float, step_plus_one: Any) -> Any:
        """``1 - beta**t`` (torch: Python float64) and its dtype: float64 if ``wide``, else float32.

        In float32, ``1 - float32(0.999)**t`` loses ~12 bits to cancellation (float32(0.999) is off by
        3e-8, so the first bias correction ``1 - 0.999`` comes out 2e-5 wrong); ``-expm1(t * log(beta))``
        with ``log(beta)`` taken in float64 stays within a few ulp.
        """
        dtype = self.wide or self.dtype
        t = ops.cast(step_plus_one, dtype)
        if self.wide is not None:
            return ops.subtract(1.0, ops.power(self.wide_const(beta), t))
        if beta == 0.0:
            return ops.ones_like(t)
        return ops.negative(ops.expm1(ops.multiply(t, math.log(beta))))

    def scalar(self, x: Any) -> Any:
        """A scalar tensor in the precision used for torch's Python-float scalar math."""
        return ops.cast(x, self.wide or self.dtype)

    def const(self, x: float) -> Any:
        """A Python float as a tensor in that precision."""
        return ops.convert_to_tensor(x, dtype=self.wide or self.dtype)

    def narrow(self, x: Any) -> Any:
        """Round a scalar from the scalar precision to the variable's dtype (torch: at the kernel call)."""
        return ops.cast(x, self.dtype)


def _dense(gradient: Any, variable: Any) -> Any:
    """A dense gradient (a tf.IndexedSlices one densified, repeated rows summed)."""
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        return ops.add(ops.zeros(variable.shape, dtype=gradient.dtype), gradient)
    return gradient


def _tf_replica_of_many() -> Any:
    """TensorFlow: the replica context of a step run by several replicas (MirroredStrategy), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def _tf_cross_replica() -> bool:
    """TensorFlow: whether this runs in cross-replica context of a strategy with several replicas."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.in_cross_replica_context() and tf.distribute.get_strategy().num_replicas_in_sync > 1


class _TorchRuleOptimizer(keras.optimizers.Optimizer):
    """Shared plumbing: torch-style weight decay kept away from the Keras base class, FMA emulation."""

    def __init__(self, learning_rate: Any, weight_decay: float = 0.0, emulate_fma: Optional[bool] = None,
                 accumulate: int = 1, epoch_batches: Optional[int] = None, clip_norm: Optional[float] = None,
                 **kwargs: Any) -> None:
        # Keras's own weight decay is decoupled and would be applied on top of ours: the base gets None.
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        if int(accumulate) < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        if clip_norm is not None and clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        self.accumulate = int(accumulate)
        self.epoch_batches = int(epoch_batches) if epoch_batches else None
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self._micro_count: Optional[int] = None  # torch backend: Python mirror of `micro_batches`
        self._on_tf = keras.backend.backend() == "tensorflow"
        weight_decay = 0.0 if weight_decay is None else float(weight_decay)
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.torch_weight_decay = weight_decay
        if emulate_fma is None:
            # JAX always compiles with XLA, which forms the FMAs itself, and has no float64 unless
            # jax_enable_x64 is set; TensorFlow and torch need the float64 detour (see _Arith).
            emulate_fma = keras.backend.backend() != "jax"
        self.emulate_fma = bool(emulate_fma)
        if self.emulate_fma and isinstance(learning_rate, (int, float)):
            self._use_float64_learning_rate(float(learning_rate))

    def _use_float64_learning_rate(self, value: float) -> None:
        """Keep a constant learning rate in float64, as torch does (a Python float in the param group).

        Keras stores it in a floatx (float32) variable. torch forms Adam's ``lr / (1 - beta1**t)`` in
        float64 and rounds once; from a float32 ``lr`` (0.003 -> 0.0030000000261) the step size comes out
        1 ulp off on a fraction of the steps (measured: Adam 1.2e-7 - 2.4e-7 from torch after 300 steps
        instead of 0). The variable stays a Keras variable, so ``optimizer.learning_rate = x``, LR
        callbacks, get_config and saving all work.
        """
        old = self._learning_rate
        if not isinstance(old, keras.Variable) or not hasattr(self, "_untrack_variable"):
            return  # a Keras version with different internals: keep its float32 variable
        with keras.name_scope(self.name):
            new = keras.Variable(value, name="learning_rate", dtype="float64", trainable=False,
                                 aggregation="only_first_replica")
        self._untrack_variable(old)
        self._learning_rate = new  # tracked on assignment, in the old one's place (after `iterations`)

    # On the torch backend the update is torch's own functional optimizer (the ``_single_tensor_*`` CPU path
    # torch.optim takes), called once for all variables: bit-identical by construction and ~6x cheaper
    # than one keras.ops graph per variable (the per-variable update was most of the facade's overhead
    # against native Keras fit). Other backends use the keras.ops ``update_step`` below.
    def _backend_update_step(self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any) -> None:
        if keras.backend.backend() != "torch":
            if _tf_cross_replica():  # inside _apply_across_replicas: the gradients are summed already
                return self._distributed_tf_update_step(  # Keras's own per-device update, without its merge_call
                    self._distribution_strategy, [(g, v.value) for g, v in zip(grads, trainable_variables)],
                    learning_rate)
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        import torch

        lr = learning_rate.value if isinstance(learning_rate, keras.Variable) else learning_rate
        lr = float(lr)
        groups: dict[float, tuple[list[Any], list[Any]]] = {}
        for grad, var in zip(grads, trainable_variables):
            params, gs = groups.setdefault(self._wd_for(var), ([], []))
            params.append(var)
            gs.append(grad if grad.dtype == var.value.dtype else grad.to(var.value.dtype))
        with torch.no_grad():
            for wd, (variables, gs) in groups.items():
                self._torch_step(torch, variables, gs, lr, wd)

    def _torch_step(self, torch: Any, variables: list[Any], grads: list[Any], lr: float, wd: float) -> None:
        raise NotImplementedError

    def _state_steps(self, torch: Any, n: int) -> list[Any]:
        # torch keeps a float32 `step` per parameter and increments it before use; Keras's `iterations`
        # holds the number of finished updates (incremented after this step).
        done = float(self.iterations.value)
        return [torch.tensor(done, dtype=torch.float32) for _ in range(n)]

    # -- accumulation and clipping with Lightning's / torch's semantics ----------------------------------
    # Keras's own `gradient_accumulation_steps` also averages, but it counts windows across epoch
    # boundaries (Lightning steps on the epoch's last batch, closing a partial window) and its
    # `global_clipnorm` scales by clip / max(norm, clip), without torch's `+ 1e-6`. So both live here:
    # each micro-batch adds grad / accumulate to a sum; the window's last batch (every `accumulate`-th
    # of the epoch, and the epoch's last) clips the sum by its global norm and takes the step.
    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        count = "int32" if keras.backend.backend() == "jax" else "int64"  # JAX has no int64 without x64
        if self.accumulate > 1:
            self._grad_sums = [self.add_variable_from_reference(v, name="grad_sum") for v in var_list]
            self._micro_batches = self.add_variable(shape=(), dtype=count, initializer="zeros",
                                                    name="micro_batches")
        if self.accumulate > 1 or self._scaler() is not None:  # steps taken (a skipped overflow step is none)
            self._updates = self.add_variable(shape=(), dtype=count, initializer="zeros", name="updates")

    @property
    def iterations(self) -> Any:
        """Optimizer steps taken (with accumulation: windows closed, not micro-batches seen)."""
        updates = self.__dict__.get("_updates")
        return updates if updates is not None else super().iterations

    def _backend_apply_gradients(self, grads: list[Any], trainable_variables: list[Any]) -> None:
        replica = _tf_replica_of_many() if self._on_tf else None  # traced once on TF; no work per step elsewhere
        if replica is not None:
            return self._apply_across_replicas(replica, grads, trainable_variables)
        scaler = self._scaler()
        if self.accumulate == 1:
            if scaler is not None:  # 16-mixed: grads are scaled by the loss scale
                return self._scaled_step([ops.cast(_dense(g, v), v.dtype) for g, v in zip(grads, trainable_variables)],
                                         trainable_variables, scaler)
            if self.clip_norm is not None:
                grads = self._clip_total_norm([_dense(g, v) for g, v in zip(grads, trainable_variables)])
            return super()._backend_apply_gradients(grads, trainable_variables)
        n = self.accumulate
        sums = [self._grad_sums[self._get_variable_index(v)] for v in trainable_variables]
        parts = [ops.divide(ops.cast(_dense(g, v), v.dtype), n) for g, v in zip(grads, trainable_variables)]

        def step() -> None:
            total = [ops.add(s, g) for s, g in zip(sums, parts)]
            if scaler is not None:
                self._scaled_step(total, trainable_variables, scaler)
            else:
                if self.clip_norm is not None:
                    total = self._clip_total_norm(total)
                _TorchRuleOptimizer._base_apply(self, total, trainable_variables)
                self._updates.assign_add(1)
            for s in sums:
                s.assign(ops.zeros(s.shape, dtype=s.dtype))

        def add() -> None:
            for s, g in zip(sums, parts):
                s.assign(ops.add(s, g))

        batches = self.epoch_batches
        if keras.backend.backend() == "torch":
            # Eager: decide in Python (no host sync); the variable mirrors the count for checkpoints.
            if self._micro_count is None:
                self._micro_count = int(ops.convert_to_numpy(self._micro_batches))
            pos = (self._micro_count % batches if batches else self._micro_count) + 1
            self._micro_count += 1
            self._micro_batches.assign(self._micro_count)
            step() if window_closes(pos, n, batches) else add()
            return None
        # In-graph form of base.window_closes (a test compares the two: tests/adapters/test_keras_accumulation.py).
        micro = self._micro_batches
        pos = ops.add(ops.mod(micro, batches) if batches else micro, 1)
        last = ops.equal(ops.mod(pos, n), 0)
        if batches:
            last = ops.logical_or(last, ops.equal(pos, batches))
        if keras.backend.backend() == "jax":
            self._jax_window(last, sums, parts, trainable_variables)
        else:
            ops.cond(last, step, add)
        micro.assign_add(1)
        return None

    def _apply_across_replicas(self, replica: Any, grads: list[Any], trainable_variables: list[Any]) -> None:
        """TensorFlow with several replicas (``tf.distribute.MirroredStrategy``, trainer.devices > 1).

        Each replica's loss is its share of the global batch's mean (adapters/keras_replicas.py), so the sum
        of the replicas' gradients is the global batch's gradient. It is summed first (one all-reduce), and
        then the step is taken once, in cross-replica context, by the very code of one device: accumulation
        windows, clipping by the global norm (of the summed gradient, as torch clips after DDP's all-reduce)
        and torch's update rule, with every assignment written to each replica's copy of the variable.
        (Keras's own order, clipping each replica's part before its all-reduce, would clip the wrong norm.)
        """
        import tensorflow as tf

        dense = [ops.convert_to_tensor(_dense(g, v)) for g, v in zip(grads, trainable_variables)]
        summed = replica.all_reduce(tf.distribute.ReduceOp.SUM, dense)

        def apply(strategy: Any, summed: Any) -> None:
            # the replicas' values are equal after the all-reduce: take the first's
            self._backend_apply_gradients([strategy.experimental_local_results(g)[0] for g in summed],
                                          trainable_variables)

        replica.merge_call(apply, args=(summed,))

    def _jax_window(self, last: Any, sums: list[Any], parts: list[Any], trainable_variables: list[Any]) -> None:
        """The window's step on JAX, where a branch of ``lax.cond`` cannot assign variables.

        JAX runs the optimizer statelessly (``stateless_apply`` inside ``jax.jit``: every assignment goes to
        a StatelessScope), so, as Keras's own JaxOptimizer does for its ``gradient_accumulation_steps``, the
        step is computed on every micro-batch with the window's summed gradient and its results are kept
        only when the window closes (``where(last, new, old)``: a select, the kept values are bit-exact).
        """
        total = [ops.add(s, g) for s, g in zip(sums, parts)]
        scaler = self._scaler()
        if scaler is not None:  # 16-mixed: the window's step is skipped on an overflow, the scale moves when it closes
            self._scaled_step(total, trainable_variables, scaler, closes=last)
        else:
            grads = self._clip_total_norm(total) if self.clip_norm is not None else total
            self._kept_apply(last, grads, trainable_variables)
        for s, t in zip(sums, total):
            s.assign(ops.where(last, ops.zeros_like(t), t))

    def _kept_apply(self, keep: Any, grads: list[Any], trainable_variables: list[Any]) -> None:
        """torch's step with ``grads``, kept only where ``keep`` (a boolean tensor) holds: the step is computed
        and its results selected (``where(keep, new, old)``, bit-exact), so the decision needs no host sync
        and no branch that assigns variables (JAX's stateless step; the eager torch backend). ``iterations``
        (``_updates``) counts the steps kept."""
        own = {id(s) for s in getattr(self, "_grad_sums", ())} | {id(self._updates)}
        if getattr(self, "_micro_batches", None) is not None:
            own.add(id(self._micro_batches))
        kept = [v for v in self.variables if id(v) not in own]  # slots, learning rate, iterations
        # torch updates the tensors in place: keep copies (JAX arrays are immutable)
        held = ops.copy if keras.backend.backend() == "torch" else (lambda t: t)
        old_params = [held(v.value) for v in trainable_variables]
        old_slots = [held(v.value) for v in kept]
        _TorchRuleOptimizer._base_apply(self, grads, trainable_variables)
        for var, old in zip(trainable_variables, old_params):
            var.assign(ops.where(keep, var.value, old))
        for var, old in zip(kept, old_slots):
            var.assign(ops.where(keep, var.value, old))
        self._updates.assign_add(ops.cast(keep, self._updates.dtype))

    # -- 16-mixed: loss scaling with torch.amp.GradScaler's rule (TorchLossScaleOptimizer holds the scale) --------
    def _scaler(self) -> Optional["TorchLossScaleOptimizer"]:
        """The loss-scale optimizer wrapped around this one (``None`` without ``16-mixed``)."""
        return self.__dict__.get("_loss_scaler")

    def _scaled_step(self, scaled: list[Any], trainable_variables: list[Any], scaler: "TorchLossScaleOptimizer",
                     closes: Any = None) -> None:
        """One optimizer step from the loss-scaled gradient ``scaled`` (a window's sum), as torch's
        ``scaler.unscale_(opt); clip_grad_norm_(...); scaler.step(opt); scaler.update()``: unscale, check every
        element for inf/NaN, clip the *unscaled* gradient, step only when finite (a skipped step leaves the
        weights, the slots and ``iterations`` as they were), then halve the scale on an overflow or double it
        after ``dynamic_growth_steps`` finite steps. All in the graph: no host sync.

        Args:
            closes: JAX only: whether this micro-batch closes its window (a boolean tensor); ``None``: it does.
        """
        scale = scaler.dynamic_scale.value
        grads = [ops.divide(g, ops.cast(scale, g.dtype)) for g in scaled]
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads]))
        if self.clip_norm is not None:
            grads = self._clip_total_norm(grads)
        keep = finite if closes is None else ops.logical_and(finite, closes)
        if keras.backend.backend() == "tensorflow":  # in the graph (tf.function): a branch of its own
            def take() -> None:
                _TorchRuleOptimizer._base_apply(self, grads, trainable_variables)
                self._updates.assign_add(1)

            ops.cond(keep, take, lambda: None)
        else:
            self._kept_apply(keep, grads, trainable_variables)
        scaler.update_scale(finite, closes)

    def _base_apply(self, grads: list[Any], trainable_variables: list[Any]) -> None:
        keras.optimizers.Optimizer._backend_apply_gradients(self, grads, trainable_variables)

    def _clip_total_norm(self, grads: list[Any]) -> list[Any]:
        """``torch.nn.utils.clip_grad_norm_``: scale by ``min(1, clip / (total_norm + 1e-6))``, always."""
        if keras.backend.backend() == "torch":
            import torch

            total = torch.nn.utils.get_total_norm(grads, 2.0)  # what clip_grad_norm_ computes
            coef = torch.clamp(self.clip_norm / (total + 1e-6), max=1.0)
            return [g * coef for g in grads]
        norms = [ops.sqrt(ops.sum(ops.square(g))) for g in grads]  # per tensor, then the norm of the norms
        total = ops.sqrt(ops.sum(ops.square(ops.stack(norms))))
        coef = ops.minimum(ops.divide(self.clip_norm, ops.add(total, 1e-6)), 1.0)
        return [ops.multiply(g, ops.cast(coef, g.dtype)) for g in grads]

    def _arith(self, variable: Any) -> _Arith:
        return _Arith(variable.dtype, self.emulate_fma)

    def _wd_for(self, variable: Any) -> float:
        """torch's weight decay for ``variable``; 0 if ``exclude_from_weight_decay`` names it."""
        if self.torch_weight_decay == 0.0:
            return 0.0
        use = getattr(self, "_use_weight_decay", None)  # Keras's (private) exclusion bookkeeping
        if use is not None and not use(variable):
            return 0.0
        return self.torch_weight_decay

    def _slot(self, slots: list[Any], variable: Any) -> Any:
        return slots[self._get_variable_index(variable)]

    @staticmethod
    def _prepare(gradient: Any, variable: Any, learning_rate: Any) -> tuple[Any, Any]:
        if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
            # A tf.IndexedSlices gradient (Embedding on TensorFlow), possibly with repeated rows:
            # densify (summing the repeats) before anything squares it. torch's dense optimizers update
            # every row as well (Adam's moments decay where the gradient is zero).
            gradient = ops.add(ops.zeros(variable.shape, dtype=gradient.dtype), gradient)
        return ops.cast(gradient, variable.dtype), ops.cast(learning_rate, variable.dtype)

    def _step_number(self) -> Any:
        # torch's `step` (1 on the first update). Keras 3 increments `iterations` AFTER update_step
        # (BaseOptimizer.apply), so inside update_step it still holds the number of finished updates.
        # With gradient_accumulation_steps the `iterations` property already counts updates, not batches.
        return ops.add(self.iterations, 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["weight_decay"] = self.torch_weight_decay  # the base reports its own None
        config["emulate_fma"] = self.emulate_fma
        config.update({"accumulate": self.accumulate, "epoch_batches": self.epoch_batches, "clip_norm": self.clip_norm})
        return config


@keras.saving.register_keras_serializable(package="unified")
class TorchSGD(_TorchRuleOptimizer):
    """``torch.optim.SGD`` (dampening 0): L2 weight decay, ``buf = mu * buf + g``, optional Nesterov."""

    def __init__(self, learning_rate: Any = 0.001, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, emulate_fma: Optional[bool] = None, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, emulate_fma=emulate_fma,
                         name=name, **kwargs)
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if nesterov and momentum <= 0.0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._momentum_buffers = []
        if self.momentum != 0.0:
            for var in var_list:
                self._momentum_buffers.append(self.add_variable_from_reference(var, name="momentum_buffer"))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        grad, lr = self._prepare(gradient, variable, learning_rate)
        a = self._arith(variable)
        wd = self._wd_for(variable)
        if wd != 0.0:
            grad = a.fma(_f32(wd), variable, grad)  # grad.add(param, alpha=wd)
        if self.momentum != 0.0:
            buf = self._slot(self._momentum_buffers, variable)
            # buf.mul_(mu).add_(grad): two kernels, two roundings (alpha=1 makes the add exact-as-plain).
            # torch clones grad into the buffer on the first step; 0 * mu + g == g, so the zero-initialised
            # buffer gives the same value without a branch.
            new_buf = ops.add(ops.multiply(buf, self.momentum), grad)
            self.assign(buf, new_buf)
            grad = a.fma(_f32(self.momentum), new_buf, grad) if self.nesterov else new_buf  # add(alpha=mu)
        self.assign(variable, a.fma(ops.negative(lr), grad, variable))  # param.add_(grad, alpha=-lr)

    def _torch_step(self, torch: Any, variables: list[Any], grads: list[Any], lr: float, wd: float) -> None:
        from torch.optim.sgd import sgd

        # A zero-initialised buffer gives buf * mu + g == g on the first step, as torch's clone does.
        bufs = ([self._slot(self._momentum_buffers, v).value for v in variables] if self.momentum != 0.0
                else [None] * len(variables))
        sgd([v.value for v in variables], grads, bufs, foreach=False, weight_decay=wd, momentum=self.momentum,
            lr=lr, dampening=0.0, nesterov=self.nesterov, maximize=False)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config


@keras.saving.register_keras_serializable(package="unified")
class TorchAdam(_TorchRuleOptimizer):
    """``torch.optim.Adam``: L2 weight decay added to the gradient; eps added after ``sqrt(v_hat)``."""

    _decoupled = False

    def __init__(self, learning_rate: Any = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, emulate_fma: Optional[bool] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, emulate_fma=emulate_fma,
                         name=name, **kwargs)
        beta1, beta2 = (float(b) for b in betas)
        for b in (beta1, beta2):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"each beta must be in [0, 1), got {list(betas)}")
        if eps < 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.betas = (beta1, beta2)
        self.eps = float(eps)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._exp_avgs = []
        self._exp_avg_sqs = []
        for var in var_list:
            self._exp_avgs.append(self.add_variable_from_reference(var, name="exp_avg"))
            self._exp_avg_sqs.append(self.add_variable_from_reference(var, name="exp_avg_sq"))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        grad, _ = self._prepare(gradient, variable, learning_rate)
        a = self._arith(variable)
        beta1, beta2 = self.betas
        exp_avg = self._slot(self._exp_avgs, variable)
        exp_avg_sq = self._slot(self._exp_avg_sqs, variable)
        param = ops.convert_to_tensor(variable)

        wd = self._wd_for(variable)
        if wd != 0.0:
            if self._decoupled:
                # AdamW: param.mul_(1 - lr * wd) first; torch forms 1 - lr * wd as a Python float.
                factor = ops.subtract(1.0, ops.multiply(a.scalar(learning_rate), a.const(wd)))
                param = ops.multiply(param, a.narrow(factor))
            else:
                grad = a.fma(_f32(wd), param, grad)  # grad.add(param, alpha=wd)

        new_exp_avg = a.lerp(exp_avg, grad, 1.0 - beta1)  # exp_avg.lerp_(grad, 1 - beta1)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): a rounded product, then one FMA
        # of ((1 - beta2) * grad) * grad onto it.
        new_exp_avg_sq = a.fma(ops.multiply(_f32(1.0 - beta2), grad), grad, ops.multiply(exp_avg_sq, beta2))
        self.assign(exp_avg, new_exp_avg)
        self.assign(exp_avg_sq, new_exp_avg_sq)

        # torch: step_size = lr / (1 - beta1**t); bias_correction2_sqrt = (1 - beta2**t) ** 0.5, both in
        # Python float64, rounded to float32 where the kernels take them.
        step = self._step_number()
        step_size = a.narrow(ops.divide(a.scalar(learning_rate), a.one_minus_pow(beta1, step)))
        bias_correction2_sqrt = a.narrow(ops.sqrt(a.one_minus_pow(beta2, step)))
        # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps): eps after the bias correction.
        denom = ops.add(ops.divide(ops.sqrt(new_exp_avg_sq), bias_correction2_sqrt), _f32(self.eps))
        # param.addcdiv_(exp_avg, denom, value=-step_size) computes param + ((-step_size) * exp_avg) / denom.
        self.assign(variable, ops.subtract(param, ops.divide(ops.multiply(step_size, new_exp_avg), denom)))

    def _torch_step(self, torch: Any, variables: list[Any], grads: list[Any], lr: float, wd: float) -> None:
        from torch.optim.adam import adam

        adam(
            [v.value for v in variables], grads,
            [self._slot(self._exp_avgs, v).value for v in variables],
            [self._slot(self._exp_avg_sqs, v).value for v in variables],
            [], self._state_steps(torch, len(variables)), foreach=False,
            decoupled_weight_decay=self._decoupled, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1],
            lr=lr, weight_decay=wd, eps=self.eps, maximize=False)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"betas": list(self.betas), "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="unified")
class TorchAdamW(TorchAdam):
    """``torch.optim.AdamW``: ``param *= 1 - lr * wd`` (decoupled), then the Adam step. Default wd 0.01."""

    _decoupled = True

    def __init__(self, learning_rate: Any = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, emulate_fma: Optional[bool] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay,
                         emulate_fma=emulate_fma, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="unified")
class TorchRMSprop(_TorchRuleOptimizer):
    """``torch.optim.RMSprop`` (not centred): ``v = alpha * v + (1 - alpha) * g^2``; eps after the root."""

    def __init__(self, learning_rate: Any = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, emulate_fma: Optional[bool] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, emulate_fma=emulate_fma,
                         name=name, **kwargs)
        if alpha < 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if eps < 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.momentum = float(momentum)

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._square_avgs = []
        self._momentum_buffers = []
        for var in var_list:
            self._square_avgs.append(self.add_variable_from_reference(var, name="square_avg"))
            if self.momentum > 0.0:
                self._momentum_buffers.append(self.add_variable_from_reference(var, name="momentum_buffer"))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        grad, lr = self._prepare(gradient, variable, learning_rate)
        a = self._arith(variable)
        wd = self._wd_for(variable)
        if wd != 0.0:
            grad = a.fma(_f32(wd), variable, grad)  # grad.add(param, alpha=wd)
        square_avg = self._slot(self._square_avgs, variable)
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        new_square_avg = a.fma(ops.multiply(_f32(1.0 - self.alpha), grad), grad,
                               ops.multiply(square_avg, self.alpha))
        self.assign(square_avg, new_square_avg)
        avg = ops.add(ops.sqrt(new_square_avg), _f32(self.eps))  # square_avg.sqrt().add_(eps)
        if self.momentum > 0.0:
            buf = self._slot(self._momentum_buffers, variable)
            # buf.mul_(momentum).addcdiv_(grad, avg): mu * buf rounded, then + grad / avg (no FMA).
            new_buf = ops.add(ops.multiply(buf, self.momentum), ops.divide(grad, avg))
            self.assign(buf, new_buf)
            self.assign(variable, a.fma(ops.negative(lr), new_buf, variable))  # param.add_(buf, alpha=-lr)
        else:
            # param.addcdiv_(grad, avg, value=-lr) computes param + ((-lr) * grad) / avg.
            self.assign_sub(variable, ops.divide(ops.multiply(lr, grad), avg))

    def _torch_step(self, torch: Any, variables: list[Any], grads: list[Any], lr: float, wd: float) -> None:
        from torch.optim.rmsprop import rmsprop

        bufs = ([self._slot(self._momentum_buffers, v).value for v in variables] if self.momentum > 0.0 else [])
        rmsprop(
            [v.value for v in variables], grads, [self._slot(self._square_avgs, v).value for v in variables],
            [], bufs, self._state_steps(torch, len(variables)), foreach=False, maximize=False,
            lr=lr, alpha=self.alpha, eps=self.eps, weight_decay=wd, momentum=self.momentum, centered=False)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum})
        return config


@keras.saving.register_keras_serializable(package="unified")
class TorchLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """``trainer.precision: 16-mixed``: Keras's ``LossScaleOptimizer`` around a PyTorch-rule optimizer, with the
    rule of ``torch.amp.GradScaler`` (init scale 2**16, x0.5 on an overflow, x2 after 2000 finite steps).

    Keras's trainers scale the loss through :meth:`scale_loss` (its ``dynamic_scale`` variable) on every
    backend, as for any ``LossScaleOptimizer``; the rest happens where the window and the replicas are known,
    in the inner optimizer's step (``_TorchRuleOptimizer._scaled_step``), which Keras's own ``apply`` cannot
    do: it would check and skip per micro-batch (a skipped micro-batch would drop out of its accumulation
    window and shift every later window), before TensorFlow's all-reduce, and clip before unscaling. Here, as
    torch's AMP recipe: micro-batches accumulate scaled gradients; when the window closes the sum is unscaled,
    checked for inf/NaN (after the replicas' all-reduce), clipped unscaled, and the step is taken only when
    finite (else the weights, the slots and ``iterations`` stay); then the scale is updated, once per window.
    The scale and its growth counter are optimizer variables, so checkpoints carry them.

    Args:
        inner_optimizer: a ``TorchSGD`` / ``TorchAdam`` / ``TorchAdamW`` / ``TorchRMSprop``.
        initial_scale: torch's ``init_scale``.
        dynamic_growth_steps: torch's ``growth_interval``.
    """

    def __init__(self, inner_optimizer: Any, initial_scale: float = 2.0 ** 16, dynamic_growth_steps: int = 2000,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        if not isinstance(inner_optimizer, _TorchRuleOptimizer):
            raise ValueError(f"TorchLossScaleOptimizer wraps a PyTorch-rule optimizer (TorchSGD, TorchAdam, ...), "
                             f"got {type(inner_optimizer).__name__}")
        if inner_optimizer.built:
            raise ValueError("wrap the optimizer before it is built (its step counter depends on loss scaling)")
        super().__init__(inner_optimizer, initial_scale=initial_scale, dynamic_growth_steps=dynamic_growth_steps,
                         name=name, **kwargs)
        # A plain attribute (no tracking: TensorFlow's AutoTrackable would make the pair a dependency cycle).
        object.__setattr__(inner_optimizer, "_loss_scaler", self)

    def apply(self, grads: Any, trainable_variables: Any = None) -> None:
        """Hand the *scaled* gradients to the inner optimizer; its step unscales, checks, skips and updates
        the scale (see the class doc). In TensorFlow's replica context as well (its step all-reduces first)."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        self.inner_optimizer.apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables: Any, grads: Any, trainable_variables: Any) -> Any:
        # JAX: the base optimizer's stateless_apply (a StatelessScope over every variable, then apply()), not
        # LossScaleOptimizer's (which unscales and checks per call, before the inner optimizer's window).
        return keras.optimizers.Optimizer.stateless_apply(self, optimizer_variables, grads, trainable_variables)

    def update_scale(self, finite: Any, closes: Any = None) -> None:
        """torch's ``GradScaler.update()`` (``_amp_update_scale_``) with selects: no branch, no host sync.

        Args:
            finite: whether the step's unscaled gradient was finite (a boolean tensor).
            closes: JAX only: whether the window closed (else the scale and counter stay); ``None``: it did.
        """
        scale, counter = self.dynamic_scale.value, self.step_counter.value  # (JAX: the step's scope values)
        grown = ops.add(counter, ops.ones_like(counter))
        grow = ops.logical_and(finite, ops.greater_equal(grown, self.dynamic_growth_steps))
        new_scale = ops.where(finite, ops.where(grow, ops.multiply(scale, 2.0), scale), ops.multiply(scale, 0.5))
        new_counter = ops.where(ops.logical_and(finite, ops.logical_not(grow)), grown, ops.zeros_like(counter))
        if closes is not None:
            new_scale = ops.where(closes, new_scale, scale)
            new_counter = ops.where(closes, new_counter, counter)
        self.dynamic_scale.assign(ops.cast(new_scale, self.dynamic_scale.dtype))
        self.step_counter.assign(ops.cast(new_counter, self.step_counter.dtype))


def make_keras_optimizer(opt_spec: Any, *, learning_rate: Any = None, **kwargs: Any) -> keras.optimizers.Optimizer:
    """The Keras optimizer for a ``unified.spec.OptimizerSpec`` (torch's update rules and defaults).

    Args:
        opt_spec: the spec's ``optimizer`` section (name, lr, weight_decay, momentum, nesterov, betas,
            eps, alpha).
        learning_rate: overrides ``opt_spec.lr``, e.g. with a ``keras.optimizers.schedules`` object.
        **kwargs: ``accumulate`` (batches per optimizer step), ``epoch_batches`` (batches per epoch: the
            epoch's last batch closes a partial window), ``clip_norm`` (torch's ``clip_grad_norm_``), or
            what the Keras base class takes (``name``, ...).
    """
    from unified.errors import SpecError

    lr = float(opt_spec.lr) if learning_rate is None else learning_rate
    wd = float(opt_spec.resolved_weight_decay)
    name = opt_spec.name
    if name == "sgd":
        return TorchSGD(learning_rate=lr, momentum=opt_spec.momentum, nesterov=opt_spec.nesterov,
                        weight_decay=wd, **kwargs)
    if name in ("adam", "adamw"):
        cls = TorchAdamW if name == "adamw" else TorchAdam
        return cls(learning_rate=lr, betas=tuple(opt_spec.betas), eps=opt_spec.eps, weight_decay=wd, **kwargs)
    if name == "rmsprop":
        return TorchRMSprop(learning_rate=lr, alpha=opt_spec.alpha, eps=opt_spec.eps, weight_decay=wd,
                            momentum=opt_spec.momentum, **kwargs)
    raise SpecError(f"unknown optimizer {name!r}", path="optimizer.name")
