"""``trainer.precision: 16-mixed`` on Keras (mixed_float16 + keras_optim.TorchLossScaleOptimizer), on every tensor backend.

There is no GPU here, so the GPU code path runs on the CPU: the Keras adapter's GPU probe is faked (one GPU), the
selection says ``gpu``, 16-mixed passes, and Keras, seeing no real GPU, computes on the CPU (float16 matmuls
work there, slowly). What is checked, per backend (tensorflow, torch, jax; one subprocess each, all at once,
since ``KERAS_BACKEND`` is per process):

* the run: float16 compute, float32 weights and outputs, the loss-scale optimizer around the PyTorch-rule one;
  Adam + accumulation 2 + clipping 1.0 for 2 epochs: every step's ``train/loss`` within 1e-3 of the float32
  run (measured <= 2.4e-4 on all three), val/loss within 1e-3;
* too large an initial scale (2**24): the overflowing windows are skipped, each halves the scale once, and
  ``iterations`` counts only the steps taken (skips == log2(2**24 / scale)), as torch's GradScaler does;
  interrupted (SIGTERM) and resumed, the run gives the same rows, scale, growth counter and iterations;
* the optimizer alone: an inf/NaN gradient leaves the weights, the momentum and ``iterations`` alone and halves
  the scale; with accumulation, one overflowing micro-batch skips its whole window and the scale moves once,
  when the window closes (not per micro-batch); the scale doubles after ``dynamic_growth_steps`` finite steps;
  with a float32 forward, the scaled step (accumulation, clipping of the unscaled gradient) is the plain step
  bit for bit (TensorFlow, torch; JAX within 1e-7: XLA fuses the two programs differently).

Nothing here ran on a GPU (docs/scaling.md, Accelerators).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("keras") is None:
    pytest.skip("needs keras", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = [kb for kb in ("tensorflow", "torch", "jax") if importlib.util.find_spec(kb) is not None]
STEP_TOL = 1e-3  # |train/loss(16-mixed) - train/loss(32)| per step; measured <= 2.4e-4
REPLICATED = ("tensorflow", "jax")  # Keras tensor backends with several devices (adapters/keras_replicas.py)

SCRIPT = r'''
# Keras 16-mixed checks for one tensor backend (run as: python -c SCRIPT <keras_backend> <out dir>); prints JSON.
import csv, json, os, signal, sys

kb, root = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = kb
import numpy as np
import keras
from keras import ops

from unified import UnifiedTrainer
from unified.adapters import keras_optim
from unified.adapters.keras import KerasAdapter
from unified.callbacks import Callback
from unified.devices import GpuProbe

out = {}
real_probe = KerasAdapter.gpu_probe
KerasAdapter.gpu_probe = classmethod(lambda c, s: GpuProbe(1, kb, "fake"))  # a (fake) GPU: 16-mixed passes

def val(v):
    return ops.convert_to_numpy(v).tolist()

def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}

def spec(precision, **trainer):
    return {"name": "mx", "seed": 0, "backend": "keras", "keras_backend": kb,
            "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 32},
            "model": {"arch": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.003},
            "trainer": {"max_epochs": 2, "log_every_n_steps": 1, "progress_bar": False, "precision": precision,
                        "accumulate_grad_batches": 2, "gradient_clip_norm": 1.0, **trainer},
            "logging": {"dir": os.path.join(root, "runs")}}

if len(sys.argv) > 3:  # N replicas (MirroredStrategy / DataParallel) on CPU devices standing in for N GPUs
    import dataclasses

    from unified.adapters import keras_replicas

    n = int(sys.argv[3])
    KerasAdapter.gpu_probe = classmethod(lambda c, s: GpuProbe(n, kb, "fake"))
    pick = keras_replicas.pick_devices
    keras_replicas.pick_devices = lambda p, listing: pick(dataclasses.replace(p, accelerator="cpu"), listing)
    if kb == "jax":
        import jax

        cpu_devices = jax.devices
        jax.devices = lambda platform=None: cpu_devices("cpu")
    t = UnifiedTrainer(spec("16-mixed", devices=n), run_dir=os.path.join(root, "replicas"))
    r = t.fit()
    o = t._adapter.optimizer
    print("RESULT " + json.dumps({"losses": losses(os.path.join(root, "replicas")), "val_loss": r.metrics["val/loss"],
                                  "devices": t._adapter.replicas.devices, "scale": val(o.dynamic_scale),
                                  "iterations": int(val(o.iterations))}))
    sys.exit(0)

# -- the run: float16 against float32 ---------------------------------------------------------------------
for prec in ("32", "16-mixed"):
    t = UnifiedTrainer(spec(prec), run_dir=os.path.join(root, prec))
    r = t.fit()
    a = t._adapter
    out[prec] = {"losses": losses(os.path.join(root, prec)), "val_loss": r.metrics["val/loss"],
                 "val_acc": r.metrics["val/accuracy"], "optimizer": type(a.optimizer).__name__,
                 "compute_dtype": a.net.layers[0].dtype_policy.compute_dtype,
                 "weight_dtype": a.net.layers[0].kernel.dtype,
                 "out_dtype": str(ops.convert_to_numpy(a.model(np.zeros((2, 64), "float32"))).dtype),
                 "iterations": int(val(a.optimizer.iterations)), "steps": r.global_step,
                 "summary": json.load(open(os.path.join(root, prec, "summary.json")))}
    if prec != "32":
        out[prec].update(scale=val(a.optimizer.dynamic_scale), counter=int(val(a.optimizer.step_counter)))
out["policy_after"] = keras.config.dtype_policy().name

# -- a too large initial scale: overflowing windows are skipped and halve the scale ------------------------
class Big(keras_optim.TorchLossScaleOptimizer):
    def __init__(self, inner, initial_scale=2.0 ** 24, **kw):
        super().__init__(inner, initial_scale=initial_scale, **kw)

keras_optim.TorchLossScaleOptimizer = Big

class SignalAt(Callback):
    def on_train_batch_end(self, state):
        if state.global_step == 12:
            os.kill(os.getpid(), signal.SIGTERM)

big = spec("16-mixed", max_epochs=None, max_steps=30)
t = UnifiedTrainer(big, run_dir=os.path.join(root, "full"))
r = t.fit()
o = t._adapter.optimizer
out["big"] = {"scale": val(o.dynamic_scale), "counter": int(val(o.step_counter)), "iterations": int(val(o.iterations)),
              "steps": r.global_step, "losses": losses(os.path.join(root, "full"))}
try:
    UnifiedTrainer(big, run_dir=os.path.join(root, "cut"), callbacks=[SignalAt()]).fit()
    raise SystemExit("the SIGTERM did not stop the run")
except BaseException as e:
    if type(e).__name__ != "Interrupted":
        raise
t = UnifiedTrainer(big)
t.fit(resume=os.path.join(root, "cut"))
o = t._adapter.optimizer
out["resumed"] = {"scale": val(o.dynamic_scale), "counter": int(val(o.step_counter)),
                  "iterations": int(val(o.iterations)), "losses": losses(os.path.join(root, "cut"))}
keras_optim.TorchLossScaleOptimizer = Big.__mro__[1]

# -- the optimizer alone --------------------------------------------------------------------------------------
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 8)).astype("float32")
y = rng.integers(0, 3, size=16)

def model(policy):
    keras.utils.set_random_seed(0)
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3),
                          keras.layers.Activation("linear", dtype="float32")])
    keras.config.set_dtype_policy(saved)
    return m

def compiled(policy, scaled, **kw):
    m = model(policy)
    opt = keras_optim.TorchSGD(learning_rate=0.1, momentum=0.9, **kw)
    if scaled is not None:
        opt = keras_optim.TorchLossScaleOptimizer(opt, **scaled)
    m.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m, opt

def weights(m):
    return [ops.convert_to_numpy(w).copy() for w in m.trainable_weights]

def same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b))

huge = x * 1e4  # float16 activations overflow: inf / NaN gradients

# one step at a time: an overflow is skipped (weights, momentum, iterations stay), the scale halves
m, opt = compiled("mixed_float16", {})
w0 = weights(m)
m.train_on_batch(huge, y)
r1 = {"unchanged": same(w0, weights(m)), "scale": val(opt.dynamic_scale), "counter": int(val(opt.step_counter)),
      "iterations": int(val(opt.iterations)),
      "momentum_zero": all(not np.any(ops.convert_to_numpy(b)) for b in opt.inner_optimizer._momentum_buffers)}
m.train_on_batch(x, y)
r1.update(changed_after=not same(w0, weights(m)), iterations_after=int(val(opt.iterations)),
          counter_after=int(val(opt.step_counter)), scale_after=val(opt.dynamic_scale))
out["overflow"] = r1

# accumulation: one overflowing micro-batch skips its whole window; the scale moves once, when it closes
m, opt = compiled("mixed_float16", {}, accumulate=2)
w0 = weights(m)
m.train_on_batch(x, y)
mid = {"scale": val(opt.dynamic_scale), "counter": int(val(opt.step_counter))}
m.train_on_batch(huge, y)
r2 = {"mid": mid, "unchanged": same(w0, weights(m)), "scale": val(opt.dynamic_scale),
      "iterations": int(val(opt.iterations)),
      "sums_zero": all(not np.any(ops.convert_to_numpy(s)) for s in opt.inner_optimizer._grad_sums)}
m.train_on_batch(x, y)
m.train_on_batch(x, y)
r2.update(changed_after=not same(w0, weights(m)), iterations_after=int(val(opt.iterations)),
          scale_after=val(opt.dynamic_scale), counter_after=int(val(opt.step_counter)))
out["acc_overflow"] = r2

# growth: after dynamic_growth_steps finite steps the scale doubles
m, opt = compiled("mixed_float16", {"dynamic_growth_steps": 3})
for _ in range(3):
    m.train_on_batch(x, y)
out["growth"] = {"scale": val(opt.dynamic_scale), "counter": int(val(opt.step_counter))}

# float32 forward: the scaled step (accumulation + clipping of the unscaled gradient) == the plain step, bit for bit
batches = [(rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 3, size=16)) for _ in range(6)]
res = []
for scaled in (None, {}):
    m, opt = compiled("float32", scaled, accumulate=2, clip_norm=0.05)
    for xb, yb in batches:
        m.train_on_batch(xb, yb)
    res.append(weights(m))
out["exact"] = same(*res)
out["exact_diff"] = max(float(np.max(np.abs(p - q))) for p, q in zip(*res))
out["moved"] = not same(res[0], weights(model("float32")))
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, processes: Any) -> dict[str, Any]:
    """Every backend's checks at once (and 2 replicas on tensorflow / jax): name -> (returncode, stderr, JSON)."""
    root = tmp_path_factory.mktemp("keras_mixed")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("KERAS_BACKEND", None)
    jobs = {kb: [kb] for kb in BACKENDS}
    jobs.update({f"{kb}-x2": [kb, "2"] for kb in BACKENDS if kb in REPLICATED})
    for name in jobs:
        (root / name).mkdir()
    done = processes({name: [sys.executable, "-c", SCRIPT, args[0], str(root / name), *args[1:]]
                      for name, args in jobs.items()}, env=env, cwd=ROOT)
    out = {}
    for name, (code, stdout, stderr) in done.items():
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        out[name] = (code, stderr, json.loads(lines[-1][7:]) if lines else None)
    return out


def _of(results: dict[str, Any], kb: str) -> dict[str, Any]:
    code, stderr, data = results[kb]
    assert code == 0 and data is not None, f"keras/{kb} exited {code}:\n{stderr[-3000:]}"
    return data


@pytest.mark.parametrize("kb", BACKENDS)
def test_16_mixed_run_follows_float32(results, kb):
    d = _of(results, kb)
    fp32, fp16 = d["32"], d["16-mixed"]
    assert fp32["optimizer"] == "TorchAdam" and fp16["optimizer"] == "TorchLossScaleOptimizer"
    assert (fp32["compute_dtype"], fp16["compute_dtype"]) == ("float32", "float16")
    assert fp16["weight_dtype"] == "float32" and fp16["out_dtype"] == "float32"
    assert d["policy_after"] == "float32"  # the policy does not leak out of the run
    assert fp16["summary"]["accelerator"] == "gpu" and fp16["summary"]["precision"] == "16-mixed"
    assert fp16["steps"] == fp32["steps"] == 46 and fp16["iterations"] == 46  # no step skipped at 2**16
    assert fp16["scale"] == 2.0 ** 16 and fp16["counter"] == 46
    a, b = fp32["losses"], fp16["losses"]
    assert a.keys() == b.keys() and len(a) == 46
    diff = max(abs(a[k] - b[k]) for k in a)
    print(f"keras/{kb} 16-mixed vs 32, adam + accumulate 2 + clip 1.0, 46 steps: max |train/loss diff| {diff:.3g}, "
          f"val/loss {fp16['val_loss']:.6f} vs {fp32['val_loss']:.6f}")
    assert 0 < diff <= STEP_TOL  # > 0: the forward really ran in float16
    assert abs(fp16["val_loss"] - fp32["val_loss"]) <= 1e-3


@pytest.mark.parametrize("kb", BACKENDS)
def test_overflowing_windows_are_skipped_and_resume_keeps_the_scale(results, kb):
    d = _of(results, kb)
    big, resumed = d["big"], d["resumed"]
    skipped = big["steps"] - big["iterations"]
    assert big["steps"] == 30 and skipped > 0
    assert big["scale"] == 2.0 ** 24 / 2 ** skipped  # each skipped step halved the scale once
    assert all(math.isfinite(v) for v in big["losses"].values())
    # rows, scale, growth counter and optimizer steps as if never interrupted
    assert resumed == {k: big[k] for k in ("scale", "counter", "iterations", "losses")}


@pytest.mark.parametrize("kb", BACKENDS)
def test_an_overflow_step_is_skipped_like_gradscaler(results, kb):
    r = _of(results, kb)["overflow"]
    assert r["unchanged"] and r["momentum_zero"] and r["iterations"] == 0
    assert (r["scale"], r["counter"]) == (2.0 ** 15, 0)
    assert r["changed_after"] and r["iterations_after"] == 1
    assert (r["scale_after"], r["counter_after"]) == (2.0 ** 15, 1)


@pytest.mark.parametrize("kb", BACKENDS)
def test_an_overflowing_micro_batch_skips_its_window(results, kb):
    r = _of(results, kb)["acc_overflow"]
    assert r["mid"] == {"scale": 2.0 ** 16, "counter": 0}  # nothing decided in the middle of a window
    assert r["unchanged"] and r["sums_zero"] and r["iterations"] == 0 and r["scale"] == 2.0 ** 15
    assert r["changed_after"] and r["iterations_after"] == 1
    assert (r["scale_after"], r["counter_after"]) == (2.0 ** 15, 1)


@pytest.mark.parametrize("kb", BACKENDS)
def test_scale_grows_and_the_scaled_step_is_the_plain_step(results, kb):
    d = _of(results, kb)
    assert d["growth"] == {"scale": 2.0 ** 17, "counter": 0}
    assert d["moved"]
    # clipping the scaled gradient instead of the unscaled one would differ by orders of magnitude
    assert d["exact_diff"] <= (1e-7 if kb == "jax" else 0.0), d["exact_diff"]


@pytest.mark.parametrize("kb", [kb for kb in BACKENDS if kb in REPLICATED])
def test_16_mixed_on_two_replicas_follows_one(results, kb):
    """The loss-scale step on 2 replicas (CPU devices standing in for GPUs: the device choice is faked, the rest
    is the GPU path): the unscale, the inf/NaN check and the scale update happen once, after the all-reduce."""
    one, two = _of(results, kb)["16-mixed"], _of(results, f"{kb}-x2")
    assert len(two["devices"]) == 2
    assert two["scale"] == one["scale"] and two["iterations"] == one["iterations"] == 46
    diff = max(abs(one["losses"][k] - two["losses"][k]) for k in one["losses"])
    print(f"keras/{kb} 16-mixed, 2 replicas vs 1: max |train/loss diff| {diff:.3g}")
    assert two["losses"].keys() == one["losses"].keys() and diff <= STEP_TOL
    assert abs(two["val_loss"] - one["val_loss"]) <= 1e-3
