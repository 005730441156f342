"""Accumulation and clipping inside the PyTorch-rule Keras optimizers, against torch.optim + clip_grad_norm_.

The reference is what Lightning does: each micro-batch gradient / N summed, the optimizer stepping on every
N-th batch of an epoch and on its last one, the summed gradient clipped by its global norm first.

The checks run on this process's Keras backend (``apply``, stateful) and, when jax is installed, on Keras's
JAX backend in a subprocess (Keras picks its backend once per process): eagerly and through
``stateless_apply`` under ``jax.jit``, the path Keras's JAX fit takes, where the window's step cannot be a
branch that assigns variables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from unified.adapters.keras_optim import TorchAdam, TorchSGD  # noqa: E402


def _grads(rng: np.random.Generator, shapes: list[tuple[int, ...]], scale: float) -> list[np.ndarray]:
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]


CASES = [(name, n, clip) for name in ("sgd", "adam") for n, clip in ((2, None), (3, 0.5), (1, 0.5))]


def _problem(n):
    """Initial weights and two epochs of micro-batch gradients (7 batches: a partial window for n = 2, 3)."""
    rng = np.random.default_rng(7)
    shapes = [(5, 3), (3,)]
    init = _grads(rng, shapes, 1.0)
    epoch_batches = 7
    micro = [_grads(rng, shapes, 0.8) for _ in range(2 * epoch_batches)]
    return init, micro, epoch_batches


def _keras_optimizer(name, n, epoch_batches, clip):
    if name == "sgd":
        return TorchSGD(learning_rate=0.1, momentum=0.9, accumulate=n, epoch_batches=epoch_batches, clip_norm=clip)
    return TorchAdam(learning_rate=0.01, accumulate=n, epoch_batches=epoch_batches, clip_norm=clip)


def _reference(name, n, clip):
    init, micro, epoch_batches = _problem(n)
    if name == "sgd":
        return _torch_reference(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, init, micro, n, epoch_batches, clip)
    return _torch_reference(torch.optim.Adam, {"lr": 0.01}, init, micro, n, epoch_batches, clip)


def _torch_reference(cls, kwargs, init, micro_grads, n, epoch_batches, clip):
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in init]
    opt = cls(params, **kwargs)
    for i, grads in enumerate(micro_grads):
        pos = i % epoch_batches + 1
        for p, g in zip(params, grads):
            part = torch.from_numpy(g) / n
            p.grad = part if p.grad is None else p.grad + part
        if pos % n == 0 or pos == epoch_batches:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            opt.zero_grad()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("n, clip", [(2, None), (3, 0.5), (1, 0.5)])
def test_accumulated_clipped_steps_match_torch(name, n, clip):
    rng = np.random.default_rng(7)
    shapes = [(5, 3), (3,)]
    init = _grads(rng, shapes, 1.0)
    epoch_batches = 7  # with n = 2 or 3 every epoch ends on a partial window
    micro = [_grads(rng, shapes, 0.8) for _ in range(2 * epoch_batches)]
    if name == "sgd":
        k_opt = TorchSGD(learning_rate=0.1, momentum=0.9, accumulate=n, epoch_batches=epoch_batches, clip_norm=clip)
        ref = _torch_reference(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, init, micro, n, epoch_batches, clip)
    else:
        k_opt = TorchAdam(learning_rate=0.01, accumulate=n, epoch_batches=epoch_batches, clip_norm=clip)
        ref = _torch_reference(torch.optim.Adam, {"lr": 0.01}, init, micro, n, epoch_batches, clip)
    variables = [keras.Variable(w.copy()) for w in init]
    for grads in micro:
        k_opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    got = [keras.ops.convert_to_numpy(v) for v in variables]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-6)
    updates = 2 * -(-epoch_batches // n)
    assert int(keras.ops.convert_to_numpy(k_opt.iterations)) == updates  # optimizer steps, not micro-batches


def test_clipping_really_clips():
    v = keras.Variable(np.zeros(4, dtype=np.float32))
    opt = TorchSGD(learning_rate=1.0, clip_norm=0.1)
    opt.apply([keras.ops.convert_to_tensor(np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32))], [v])
    step = keras.ops.convert_to_numpy(v)
    assert np.linalg.norm(step) == pytest.approx(0.1, rel=1e-5)
    np.testing.assert_allclose(step / np.linalg.norm(step), [-0.6, -0.8, 0, 0], atol=1e-6)


JAX_WORKER = textwrap.dedent(
    r"""
    import json, sys
    import jax
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    import test_keras_accumulation as t

    assert keras.backend.backend() == "jax"
    out, iters = {}, {}
    for name, n, clip in t.CASES:
        init, micro, epoch_batches = t._problem(n)
        for mode in ("eager", "jit"):
            opt = t._keras_optimizer(name, n, epoch_batches, clip)
            variables = [keras.Variable(w.copy()) for w in init]
            if mode == "eager":
                for grads in micro:
                    opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
            else:
                opt.build(variables)
                step = jax.jit(opt.stateless_apply)
                values, opt_vars = [v.value for v in variables], [v.value for v in opt.variables]
                for grads in micro:
                    values, opt_vars = step(opt_vars, [jax.numpy.asarray(g) for g in grads], values)
                for v, x in zip(variables, values):
                    v.assign(x)
                for v, x in zip(opt.variables, opt_vars):
                    v.assign(x)
            key = f"{name}/{n}/{clip}/{mode}"
            for i, v in enumerate(variables):
                out[f"{key}/{i}"] = keras.ops.convert_to_numpy(v)
            iters[key] = int(keras.ops.convert_to_numpy(opt.iterations))
    np.savez(sys.argv[1], **out)
    print("ITERS " + json.dumps(iters))
    """
)


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install 'unified-trainer[keras-jax]')")
    out = tmp_path_factory.mktemp("acc_jax") / "jax.npz"
    here = Path(__file__).resolve().parent
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(here.parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", JAX_WORKER, str(out), str(here)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    iters = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("ITERS ")][-1][6:])
    return dict(np.load(out)), iters


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("name, n, clip", CASES)
def test_accumulated_clipped_steps_match_torch_on_jax(name, n, clip, mode, jax_results):
    """The same windows on Keras's JAX backend, eagerly and in jitted stateless_apply (fit's path)."""
    arrays, iters = jax_results
    key = f"{name}/{n}/{clip}/{mode}"
    ref = _reference(name, n, clip)
    for i, r in enumerate(ref):
        np.testing.assert_allclose(arrays[f"{key}/{i}"], r, rtol=0, atol=2e-6)
    _, _, epoch_batches = _problem(n)
    assert iters[key] == 2 * -(-epoch_batches // n)  # optimizer steps, not micro-batches


@pytest.mark.parametrize("bad", [{"accumulate": 0}, {"clip_norm": 0.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TorchSGD(learning_rate=0.1, **bad)
