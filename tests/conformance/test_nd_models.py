"""Tensors of any shape: the built-in cnn / resnet / lstm / gru / transformer train on every backend from the
same portable weights and batches, and agree step for step with the plain torch loop.

Digits serve as 1x8x8 images (``data.shape: [1, 8, 8]``), as 8-step sequences of 8 features (``[8, 8]``) and
as 64 token ids (pixel values 0..16 with ``vocab_size: 17``), so nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from unified import UnifiedTrainer
from unified.cli import main
from unified.registry import installed_backends

pytestmark = pytest.mark.skipif(not installed_backends(), reason="needs a training backend")

IMAGE, SEQUENCE, TOKENS = [1, 8, 8], [8, 8], [64]
CASES = {  # name -> (model fields, data.shape)
    "cnn": ({"arch": "cnn", "channels": [8, 16], "batch_norm": True, "hidden": [32]}, IMAGE),
    "resnet": ({"arch": "resnet", "depth": 8, "width": 8}, IMAGE),
    "lstm": ({"arch": "lstm", "hidden_size": 16}, SEQUENCE),
    "gru": ({"arch": "gru", "hidden_size": 16, "bidirectional": True, "num_layers": 2}, SEQUENCE),
    "transformer": ({"arch": "transformer", "d_model": 16, "num_heads": 2, "num_layers": 1,
                     "dim_feedforward": 32}, SEQUENCE),
    "lstm_tokens": ({"arch": "lstm", "hidden_size": 16, "vocab_size": 17, "embed_dim": 8}, TOKENS),
    "transformer_tokens": ({"arch": "transformer", "d_model": 16, "num_heads": 2, "num_layers": 1,
                            "dim_feedforward": 32, "vocab_size": 17, "max_len": 64}, TOKENS),
}
STEPS = 100
# (optimizer, lr, absolute per-step limit); DESIGN.md: SGD in absolute terms, Adam relative to the loss
OPTIMIZERS = {"sgd": ("sgd", 0.01, 1e-5), "adam": ("adam", 0.003, 1e-4)}
REFERENCE = "torch"  # the plain loop: the reference every trainer is compared with
# resnet (8 ReLU+BN layers, residual sums) amplifies last-bit kernel differences once a pre-activation sits on a
# ReLU kink: on an AVX-512/AMX host TensorFlow's oneDNN kernels agree with torch to 2e-7 through step 24, then one
# unit flips and the gap jumps to 4.6e-3 (TF_ENABLE_ONEDNN_OPTS=0: <= 1e-6 over all 100 steps; Keras on torch
# flipped at step 57 with an equally exact variance formula). So resnet is held to the limit over its first
# KINK_EXACT_STEPS steps and to KINK_LATE_LIMIT over all of them; docs/architectures.md reports the figures.
KINK_EXACT_STEPS = {"resnet": 20}
KINK_LATE_LIMIT = 2e-2
_cache: dict[tuple[str, str, str], dict[int, float]] = {}


def _spec(case: str, opt: str, tmp: Path) -> dict:
    model, shape = CASES[case]
    name, lr, _ = OPTIMIZERS[opt]
    return {"name": f"nd-{case}", "seed": 0,
            "data": {"source": "sklearn:digits", "shape": shape, "standardize": "vocab_size" not in model,
                     "batch_size": 32},
            "model": model, "optimizer": {"name": name, "lr": lr},
            "trainer": {"max_steps": STEPS, "log_every_n_steps": 1, "progress_bar": False},
            "metrics": ["accuracy"], "logging": {"dir": str(tmp)}}


def _losses(backend: str, case: str, opt: str, tmp: Path) -> dict[int, float]:
    key = (backend, case, opt)
    if key not in _cache:
        run_dir = UnifiedTrainer(_spec(case, opt, tmp), backend=backend).fit().run_dir
        with open(run_dir / "metrics.csv", newline="") as f:
            _cache[key] = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]}
    return _cache[key]


def _gap(backend: str, case: str, opt: str, tmp_path_factory) -> float:
    if REFERENCE not in installed_backends():
        pytest.skip("the torch reference backend is not installed")
    tmp = tmp_path_factory.mktemp("nd")
    ref, got = _losses(REFERENCE, case, opt, tmp), _losses(backend, case, opt, tmp)
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    limit = OPTIMIZERS[opt][2] * (1.0 if opt == "sgd" else max(1.0, max(abs(v) for v in ref.values())))
    exact = KINK_EXACT_STEPS.get(case, STEPS)
    gap = max(abs(got[k] - ref[k]) for k in ref if k <= exact)
    assert gap <= limit, (f"{case}/{opt} on {backend}: per-step train/loss (steps 1-{exact}) differs from "
                          f"{REFERENCE} by {gap:.3g}")
    if exact < STEPS:
        late = max(abs(got[k] - ref[k]) for k in ref)
        assert late <= KINK_LATE_LIMIT, (f"{case}/{opt} on {backend}: per-step train/loss differs from {REFERENCE} "
                                         f"by {late:.3g} over {STEPS} steps")
    return gap


@pytest.mark.parametrize("case", list(CASES))
def test_every_arch_agrees_step_for_step_with_sgd(backend, case, tmp_path_factory):
    if backend in ("lightning", "ignite") and case not in ("cnn", "lstm_tokens"):
        pytest.skip("lightning/ignite run the very same torch modules as the torch loop: two archs suffice")
    _gap(backend, case, "sgd", tmp_path_factory)


@pytest.mark.parametrize("case", ["cnn", "transformer"])
def test_adam_agrees_relative_to_the_loss(backend, case, tmp_path_factory):
    _gap(backend, case, "adam", tmp_path_factory)


def test_cnn_run_exports_and_predicts_images(backend, tmp_path, capsys):
    """A CNN run directory exports to ONNX with a dynamic batch axis over N,C,H,W and standardization in the
    graph; the artifact answers raw 8x8 images like the trained model."""
    import onnxruntime as ort

    spec = _spec("cnn", "sgd", tmp_path)
    spec["trainer"] = {"max_epochs": 1, "progress_bar": False}
    trainer = UnifiedTrainer(spec, backend=backend)
    run_dir = trainer.fit().run_dir
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0, capsys.readouterr().err
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, 1, 8, 8]
    from sklearn.datasets import load_digits

    raw = load_digits().data[-20:].reshape(-1, 1, 8, 8).astype(np.float32)
    sess = ort.InferenceSession(str(run_dir / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: raw})[0]
    assert got.shape == (20, 10) and np.abs(got - trainer.predict(raw)).max() < 1e-4
    # the raw 64-value rows the source gives are viewed through data.shape too
    assert np.abs(trainer.predict(load_digits().data[-20:]) - got).max() < 1e-4


@pytest.mark.parametrize("changes, expect", [
    ({"data": {"shape": [3, 8, 8]}}, "data.shape: sklearn:digits: x: [3, 8, 8] holds 192 values per sample"),
    ({"data": {"shape": [8, 8]}, "model": {"arch": "cnn"}}, "cnn takes images shaped (C, H, W)"),
    ({"data": {"shape": [1, 8, 8]}, "model": {"arch": "mlp"}}, "mlp takes rows [n, features]"),
    ({"data": {"shape": [1, 8, 8]}, "model": {"arch": "cnn", "depth": 8}}, "depth: not a field of arch 'cnn'"),
    ({"data": {"shape": [64], "standardize": True}, "model": {"arch": "lstm", "vocab_size": 17}},
     "token ids (model.vocab_size is set) are not standardized"),
])
def test_bad_shapes_exit_2_with_one_line(changes, expect, tmp_path, capsys):
    import yaml

    spec = {"name": "bad", "data": {"source": "sklearn:digits"}, "trainer": {"max_epochs": 1},
            "logging": {"dir": str(tmp_path)}}
    for key, value in changes.items():
        spec[key] = {**spec.get(key, {}), **value}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
