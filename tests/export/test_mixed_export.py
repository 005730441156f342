"""Export of a model trained in mixed precision, on every target.

Mixed precision is a training-time compute policy (torch autocast, Keras's ``mixed_bfloat16`` /
``mixed_float16`` dtype policy); the master weights are float32. The exported artifact is a float32 graph of
those weights (what Lightning's ``to_onnx`` and Keras's export give), verified at the usual tolerance against
the float32 forward of the trained weights. Was: Keras wrote a graph mixing bfloat16 and float16 that
onnxruntime refused to load (a traceback), and a 16-mixed Keras run's artifacts missed the tolerance (exit 1).

Each artifact is reloaded here and compared with an independent reference: a numpy forward of the run's
portable weights (``checkpoints/final.npz``) on the run's standardized inputs, in float64.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from unified.registry import load_adapter

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOL = 1e-4
FORMATS = ("onnx", "savedmodel", "torchscript", "keras")  # TFLite: covered by test_export / test_nd_export
SPEC = {"name": "mixed", "seed": 0,
        "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 32},
        "model": {"arch": "mlp", "hidden": [32], "activation": "relu"},
        "optimizer": {"name": "adam", "lr": 0.003},
        "trainer": {"max_epochs": 1, "max_steps": 20, "precision": "bf16-mixed", "progress_bar": False}}

# A user's Keras model (model.factory): built under the run's mixed policy, exported as a float32 clone.
USER_MODEL = '''
import keras


def make(in_features, num_classes):
    inputs = keras.Input((in_features,))
    h = keras.layers.Dense(24, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="head")(h))
'''


def _raw(n: int = 40) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[-n:].astype(np.float32)


def _numpy_forward(run_dir: Path, x_raw: np.ndarray) -> np.ndarray:
    """float64 forward of a Dense/ReLU chain from final.npz: the built-in MLP (``layers.<i>.weight`` [out, in])
    or the user's model above (``hidden`` / ``head`` kernels [in, out])."""
    from unified.export import Preprocess

    x = Preprocess.load(run_dir).apply(x_raw).astype(np.float64)
    with np.load(run_dir / "checkpoints" / "final.npz") as npz:
        w = {k: npz[k].astype(np.float64) for k in npz.files}
    if "layers.0.weight" in w:
        layers = [(w[f"layers.{i}.weight"].T, w[f"layers.{i}.bias"]) for i in range(len(w) // 2)]
    else:
        def find(layer: str, what: str) -> np.ndarray:
            (key,) = [k for k in w if layer in k and k.endswith(what)]
            return w[key]

        layers = [(find(name, "kernel"), find(name, "bias")) for name in ("hidden", "head")]
    for i, (kernel, bias) in enumerate(layers):
        x = x @ kernel + bias
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _check(run_dir: Path, formats: list[str], precision: str) -> dict:
    """Every artifact verified against the float32 forward and equal to the numpy one within TOL; the manifest
    says so. Returns the manifest."""
    from unified.export.runtimes import load_runner

    export = run_dir / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    assert sorted(a["format"] for a in manifest["artifacts"]) == sorted(formats)
    prec = manifest["precision"]
    assert prec["trained"] == precision and prec["exported"] == "float32"
    # informational: the mixed-precision forward is not the float32 one (what was compared before)
    assert prec["mixed_forward_max_abs_diff"] is not None and prec["mixed_forward_max_abs_diff"] > TOL, prec
    x = _raw()
    expected = _numpy_forward(run_dir, x)
    for entry in manifest["artifacts"]:
        v = entry["verification"]
        assert v["passed"] is True and v["max_abs_diff"] <= TOL, entry
        assert v["reference"] == f"float32 forward of the trained weights (trained with {precision})"
        got = load_runner(entry["format"], export / entry["path"], entry)(x)
        gap = float(np.abs(got.astype(np.float64) - expected).max())
        assert gap <= TOL, f"{entry['format']}: {gap:.3g} from the float32 forward of final.npz"
    return manifest


def _formats(target, spec: dict) -> list[str]:
    from unified.spec import load_spec

    gives = load_adapter(target.backend).export_formats_for(load_spec({**spec, "keras_backend": target.variant}))
    need = {"onnx": "tf2onnx" if target.variant == "tensorflow" else "onnx" if target.variant else "onnxscript",
            "savedmodel": "tensorflow"}
    return [f for f in FORMATS if f in gives and importlib.util.find_spec(need.get(f, "numpy")) is not None]


def test_bf16_mixed_run_exports_float32_artifacts(target, run_target, tmp_path):
    """bf16-mixed on every target: the run's export section writes every format the target gives among ONNX /
    SavedModel / TorchScript / .keras; all load, verify at 1e-4 and equal the float32 forward of the trained
    weights. On Keras also a user's functional model (model.factory), exported as a float32 clone."""
    spec = {**SPEC, "logging": {"dir": str(tmp_path / "runs")}}
    formats = _formats(target, spec)
    if not formats:
        pytest.skip(f"{target.name} gives none of {', '.join(FORMATS)}")
    Job = run_target.Job
    jobs = [Job(target, {**spec, "export": {"formats": formats}}, name="builtin")]
    if target.backend == "keras":
        user = {**spec, "model": {"factory": "mixed_user_model:make"}, "export": {"formats": formats}}
        jobs.append(Job(target, user, name="user", files={"mixed_user_model.py": USER_MODEL}))
    runs = run_target.many(jobs)
    for job in jobs:
        _check(runs[job.name].ok().run_dir, formats, "bf16-mixed")


def test_keras_16_mixed_exports_within_tolerance(tmp_path, monkeypatch):
    """16-mixed on Keras (the GPU path; the GPU probe faked as in tests/adapters/test_keras_mixed.py, Keras
    computes float16 on the CPU): was 2e-3 from the in-process prediction, above export.tolerance -> exit 1."""
    pytest.importorskip("keras")
    from unified import UnifiedTrainer
    from unified.adapters.keras import KerasAdapter
    from unified.devices import GpuProbe
    from unified.registry import resolve_keras_backend

    kb = resolve_keras_backend(None)
    monkeypatch.setattr(KerasAdapter, "gpu_probe", classmethod(lambda cls, spec: GpuProbe(1, kb, "fake")))
    spec = {**SPEC, "trainer": {**SPEC["trainer"], "precision": "16-mixed"},
            "logging": {"dir": str(tmp_path / "runs")}, "export": {"formats": ["keras"]}}
    result = UnifiedTrainer(spec, backend="keras").fit()
    manifest = _check(Path(result.run_dir), ["keras"], "16-mixed")
    assert manifest["source"]["backend"] == "keras"


def test_an_artifact_its_runtime_cannot_load_is_a_failed_verification(tmp_path):
    """Loading an artifact in its runtime is guarded like running it (was: only the call was, and onnxruntime's
    session creation raised a traceback): a failed verification with one line naming the runtime."""
    from unified.export.artifacts import _failure, _verify

    (tmp_path / "model.onnx").write_bytes(b"not an onnx model\n")
    entry = {"format": "onnx", "path": "model.onnx", "input_name": "inputs", "output_name": "outputs"}
    probe = np.zeros((2, 4), dtype=np.float32)
    v = _verify("onnx", tmp_path, entry, probe, probe, TOL, "zeros")
    assert v["passed"] is False and v["max_abs_diff"] is None
    assert v["error"].startswith("onnxruntime cannot load it: ") and "\n" not in v["error"], v
    message = _failure({**entry, "verification": v})
    assert message.startswith("onnx artifact failed verification: onnxruntime cannot load it") and "\n" not in message
