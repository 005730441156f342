"""Accumulation and clipping inside the PyTorch-rule Keras optimizers, against torch.optim + clip_grad_norm_.

The reference is what Lightning does: each micro-batch gradient / N summed, the optimizer stepping on every
N-th batch of an epoch and on its last one, the summed gradient clipped by its global norm first.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from unified.adapters.keras_optim import TorchAdam, TorchSGD  # noqa: E402


def _grads(rng: np.random.Generator, shapes: list[tuple[int, ...]], scale: float) -> list[np.ndarray]:
    return [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]


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


@pytest.mark.parametrize("bad", [{"accumulate": 0}, {"clip_norm": 0.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TorchSGD(learning_rate=0.1, **bad)
