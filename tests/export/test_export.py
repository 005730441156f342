"""Export with verification: every backend, every format it claims, reloaded in the format's own runtime."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from unified import NotSupportedError, UnifiedTrainer
from unified.cli import main
from unified.registry import installed_backends, load_adapter

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SMALL = {"data": {"batch_size": 64}, "model": {"hidden": [16]}, "trainer": {"max_epochs": 1}}


@pytest.fixture(autouse=True)
def _export_tools(request):
    """Skip a backend whose exporter package is not installed (tox envs without the `export` extra)."""
    import importlib.util

    backend = request.node.callspec.params.get("backend") if hasattr(request.node, "callspec") else None
    need = {"keras": "tf2onnx", "lightning": "onnxscript", "ignite": "onnxscript"}.get(backend or "", "onnxscript")
    if importlib.util.find_spec(need) is None:
        pytest.skip(f"needs {need} (pip install 'unified-trainer[export]')")


def _raw_digits(n: int = 40) -> np.ndarray:
    """Raw features as a client would send them (not standardized)."""
    from sklearn.datasets import load_digits

    return load_digits().data[-n:].astype(np.float32)


def _run_artifact(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Load ``path`` in the format's own runtime (independently of unified.export.runtimes) and run ``x``."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["inputs"]
        assert sess.get_inputs()[0].shape[0] != 1  # a dynamic batch axis
        return sess.run(["outputs"], {"inputs": x})[0]
    if fmt == "torchscript":
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.jit.load(str(path))
        with torch.no_grad():
            return m(torch.from_numpy(x)).numpy()
    if fmt == "savedmodel":
        import tensorflow as tf

        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        return list(fn(inputs=tf.constant(x)).values())[0].numpy()
    if fmt == "keras":
        import keras

        return keras.ops.convert_to_numpy(keras.saving.load_model(str(path))(x))
    if fmt == "tflite":
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            it = tf.lite.Interpreter(model_path=str(path))
        d = it.get_input_details()[0]
        it.resize_tensor_input(d["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(d["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])
    raise AssertionError(fmt)


def test_every_claimed_format_reloads_and_matches(backend, make_spec):
    """The spec's export section exports at the end of fit; every artifact matches trainer.predict on raw features."""
    probe = UnifiedTrainer(make_spec(SMALL), backend=backend).spec
    claimed = sorted(load_adapter(backend).export_formats_for(probe))
    assert "onnx" in claimed
    trainer = UnifiedTrainer(make_spec({**SMALL, "export": {"formats": claimed}}), backend=backend)
    result = trainer.fit()
    export = result.run_dir / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    assert sorted(a["format"] for a in manifest["artifacts"]) == claimed
    assert manifest["task"] == "classification" and manifest["classes"] == list(range(10))
    assert manifest["input"]["shape"] == [None, 64] and manifest["output"]["shape"] == [None, 10]
    assert manifest["input"]["dtype"] == "float32" and manifest["input"]["preprocessing"]["in_graph"] is True
    assert manifest["source"]["backend"] == backend and manifest["source"]["spec_hash"].startswith("sha256:")
    assert "numpy" in manifest["versions"]

    x = _raw_digits()
    expected = trainer.predict(x)
    labels = trainer.predict_labels(x)
    for entry in manifest["artifacts"]:
        v = entry["verification"]
        assert v["verified"] and v["passed"] and v["max_abs_diff"] < 1e-4, entry
        for f in entry["files"]:
            assert (export / f).exists(), f
        got = _run_artifact(entry["format"], export / entry["path"], x)
        assert got.shape == expected.shape
        gap = float(np.abs(got - expected).max())
        assert gap < 1e-4, f"{entry['format']} from {backend}: max |diff| {gap:.2e} vs trainer.predict"
        assert [manifest["classes"][i] for i in got.argmax(1)] == labels


def test_unified_export_from_run_dir(backend, make_spec, tmp_path, capsys):
    """`unified export RUN_DIR` rebuilds the model from spec.yaml + checkpoints/final.npz in the run's backend."""
    trainer = UnifiedTrainer(make_spec(SMALL), backend=backend)
    run_dir = trainer.fit().run_dir
    assert (run_dir / "checkpoints" / "final.npz").is_file() and (run_dir / "preprocess.json").is_file()
    # the cheapest format each backend gives (ONNX from every backend is covered above)
    fmt = "keras" if backend == "keras" else "torchscript"
    assert main(["export", str(run_dir), "--format", fmt]) == 0
    assert "verified in" in capsys.readouterr().out
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["source"]["weights"] == os.path.join("checkpoints", "final.npz")
    entry = manifest["artifacts"][0]
    assert entry["verification"]["probe"].startswith("val split") and entry["verification"]["passed"]
    x = _raw_digits()
    gap = np.abs(_run_artifact(fmt, run_dir / "export" / entry["path"], x) - trainer.predict(x)).max()
    assert gap < 1e-4

    # a format this backend does not give: another installed backend that gives it rebuilds the built-in model
    # from the portable weights (checked against this run's model first), else exit 2 naming what it gives
    foreign = next(f for f in ("savedmodel", "torchscript") if f not in load_adapter(backend).export_formats_for(
        trainer.spec))
    from unified.export.sources import _rebuilders

    before = sorted(p.name for p in (run_dir / "export").iterdir())
    if not _rebuilders(trainer.spec, backend, [foreign]):
        assert main(["export", str(run_dir), "--format", foreign]) == 2
        err = capsys.readouterr().err
        assert f"export format {foreign} is not available from backend {backend}" in err and "which gives onnx" in err
        assert sorted(p.name for p in (run_dir / "export").iterdir()) == before
        return
    assert main(["export", str(run_dir), "--format", foreign, "--out", str(run_dir / "foreign")]) == 0, \
        capsys.readouterr().err
    entry = json.loads((run_dir / "foreign" / "manifest.json").read_text())["artifacts"][0]
    assert entry["rebuilt_on"] and entry["verification"]["passed"]
    gap = np.abs(_run_artifact(foreign, run_dir / "foreign" / entry["path"], x) - trainer.predict(x)).max()
    assert gap < 1e-4


def test_export_bad_inputs_exit_2(make_spec, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    assert "not a run directory (no spec.yaml)" in capsys.readouterr().err
    backend = installed_backends()[0]
    run_dir = UnifiedTrainer(make_spec(SMALL), backend=backend).fit().run_dir
    assert main(["export", str(run_dir), "--format", "onx"]) == 2
    assert "did you mean 'onnx'" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--weights", "best"]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--tolerance", "0"]) == 2
    assert "tolerance: must be > 0" in capsys.readouterr().err


def test_unsupported_format_in_spec_is_refused_before_training(make_spec, tmp_path):
    torch_backend = next((b for b in installed_backends() if b in ("lightning", "ignite")), None)
    if torch_backend is None:
        pytest.skip("needs a torch trainer")
    spec = make_spec({**SMALL, "export": {"formats": ["onnx", "tflite"]}})
    with pytest.raises(NotSupportedError, match="export format tflite is not available from backend"):
        UnifiedTrainer(spec, backend=torch_backend).fit()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("summary.json"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path), "--backend", torch_backend]) == 2


def test_run_whose_export_fails_verification_exits_1(make_spec, tmp_path, capsys):
    """`unified run` with an export section: training completes, the export is refused above the tolerance.

    A real difference, no mock: the ONNX graph standardizes in float32, the reference in float64 (measured
    ~1e-7 over 64 rows x 10 logits, far above 1e-15).
    """
    spec = make_spec({**SMALL, "export": {"formats": ["onnx"], "tolerance": 1e-15}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    backend = installed_backends()[0]
    assert main(["run", str(path), "--backend", backend, "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "export: onnx artifact differs from the trained model by" in err and "training itself completed" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"
    assert not (tmp_path / "r" / "export").exists()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".export.")]  # no temp dir left


def _numpy_mlp(run_dir: Path, x: np.ndarray) -> np.ndarray:
    """An independent reference: the built-in MLP in numpy from preprocess.json and checkpoints/final.npz."""
    pre = json.loads((run_dir / "preprocess.json").read_text())
    h = (x.astype(np.float64) - np.array(pre["mean"])) / np.array(pre["std"])
    with np.load(run_dir / "checkpoints" / "final.npz") as w:
        n = len(w.files) // 2
        for i in range(n):
            h = h @ w[f"layers.{i}.weight"].astype(np.float64).T + w[f"layers.{i}.bias"]
            if i < n - 1:
                h = np.maximum(h, 0)
    return h


def test_export_section_and_unified_export_on_every_target(target, make_spec, run_target):
    """On every target, Keras on each tensor backend included (those this process cannot host run in one
    subprocess): `unified run` with an export section, then `unified export RUN_DIR` of every format the
    target claims; each artifact reloaded here in its own runtime matches an independent numpy forward pass
    of checkpoints/final.npz."""
    import importlib.util

    from unified.spec import load_spec

    need = "tf2onnx" if target.variant == "tensorflow" else "onnxscript"
    if importlib.util.find_spec(need) is None:
        pytest.skip(f"needs {need} (pip install 'unified-trainer[export]')")
    spec = make_spec(SMALL)
    claimed = sorted(load_adapter(target.backend).export_formats_for(load_spec({**spec, "keras_backend": target.variant})))
    first = "onnx" if "onnx" in claimed else claimed[0]
    spec["export"] = {"formats": [first]}
    Job = run_target.Job
    runs = run_target.many([
        Job(target, spec, name="run"),
        Job(target, None, name="export", command=["export", "@run", "--format", ",".join(claimed), "--out", "@run/all"]),
    ])
    run_dir = runs["run"].ok().run_dir
    runs["export"].ok()
    assert "verified in" in runs["export"].stdout
    x = _raw_digits()
    reference = _numpy_mlp(run_dir, x)
    for out, formats in (("export", [first]), ("all", claimed)):
        manifest = json.loads((run_dir / out / "manifest.json").read_text())
        assert sorted(a["format"] for a in manifest["artifacts"]) == formats
        assert manifest["source"]["backend"] == target.backend
        assert manifest["source"].get("keras_backend") == target.variant
        if out == "all":
            assert manifest["source"]["weights"] == os.path.join("checkpoints", "final.npz")
        for entry in manifest["artifacts"]:
            assert entry["verification"]["passed"] and entry["verification"]["max_abs_diff"] < 1e-4, entry
            if entry["format"] == "keras" and not run_target.runs_here(target):
                continue  # a .keras file loads on the Keras backend it was saved on: checked by the run itself
            got = _run_artifact(entry["format"], run_dir / out / entry["path"], x)
            gap = float(np.abs(got - reference).max())
            assert gap < 1e-4, f"{entry['format']} from {target.name} ({out}): max |diff| {gap:.2e} vs numpy"


def test_export_from_run_dir_whose_data_is_gone(backend, make_spec, tmp_path, capsys):
    """The run's data file was deleted: `unified export RUN_DIR` rebuilds the model from preprocess.json and
    checkpoints/final.npz, verifies on a synthetic probe, and the artifact still matches the trained model
    (a scheduler whose defaults need the data's length must not get in the way)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    csv_path = tmp_path / "digits.csv"
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    np.savetxt(csv_path, np.column_stack([digits.data, digits.target]), delimiter=",", header=header, comments="",
               fmt="%g")
    spec = make_spec({**SMALL, "data": {"source": f"csv:{csv_path}", "target": "label", "batch_size": 64},
                      "scheduler": {"name": "cosine"}})
    trainer = UnifiedTrainer(spec, backend=backend)
    run_dir = trainer.fit().run_dir
    csv_path.unlink()
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0, capsys.readouterr().err
    entry = json.loads((run_dir / "export" / "manifest.json").read_text())["artifacts"][0]
    assert entry["verification"]["probe"].startswith("synthetic") and entry["verification"]["passed"]
    x = digits.data[-40:].astype(np.float32)
    assert np.abs(_run_artifact("onnx", run_dir / "export" / entry["path"], x) - trainer.predict(x)).max() < 1e-4
