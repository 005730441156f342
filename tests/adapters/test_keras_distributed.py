"""Keras with ``trainer.devices: 2`` (adapters/keras_replicas.py) against ``devices: 1``, on TensorFlow and JAX.

Keras's tensor backend, TensorFlow's logical devices and JAX's device count are fixed per process, so each
(backend, devices) pair trains in a subprocess of its own; they all start at once and the tests judge their
run directories:

* per-step ``train/loss`` within 1e-5 of one device, and the same validation metrics, with a callback reading
  and writing the weights in the middle of an epoch: plain SGD on odd global
  batches (33 = 17 + 16 samples per replica), SGD with momentum + accumulation (3) + clipping (0.5), and a
  global batch of ONE sample (batch_size 1437 of 1438: the second replica gets nothing, or a weight-0 pad);
* the replicas exist (2 in sync on TensorFlow, the weights on 2 JAX devices), ``summary.json`` says
  ``world_size: 2``, the checkpoint/final weights are the single-replica ones, ``.keras`` export verifies;
* SIGTERM in the middle of an epoch then ``fit(resume=...)`` on 2 devices: the rows of an uninterrupted run;
* Keras on torch with ``devices: 2``: exit 2, one line giving the reason, nothing left behind; 2 devices asked
  for in a process whose TensorFlow / JAX already started with one: refused, naming the way out.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

if importlib.util.find_spec("keras") is None:
    pytest.skip("needs keras (pip install 'unified-trainer[keras]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5
BACKENDS = [kb for kb in ("tensorflow", "jax") if importlib.util.find_spec(kb) is not None]

BASE: dict[str, Any] = {
    "name": "kd", "seed": 0, "backend": "keras",
    "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 33},
    "model": {"arch": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "trainer": {"max_epochs": 2, "log_every_n_steps": 1, "progress_bar": False},
    "callbacks": [{"model_checkpoint": {"monitor": "val/accuracy", "mode": "max", "save_last": True}}],
}
SPECS: dict[str, dict[str, Any]] = {
    "sgd": {**BASE, "export": {"formats": ["keras"]}},
    "acc": {**BASE, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "trainer": {**BASE["trainer"], "accumulate_grad_batches": 3, "gradient_clip_norm": 0.5}},
    # 1438 training samples: a global batch of 1437 (719 + 718), then one of a single sample
    "tiny": {**BASE, "data": {**BASE["data"], "batch_size": 1437}, "trainer": {**BASE["trainer"], "max_epochs": 3}},
}

SCRIPT = textwrap.dedent(
    r"""
    import json, os, signal, sys
    from unified import UnifiedTrainer, load_spec
    from unified.callbacks import Callback

    class SignalAt(Callback):
        def __init__(self, step):
            self.step = step

        def on_train_batch_end(self, state):
            if state.global_step == self.step:
                os.kill(os.getpid(), signal.SIGTERM)

    class Poke(Callback):
        # reads and writes the weights mid-epoch (mirrored copies on TensorFlow, JAX's replicated train state)
        def on_train_batch_end(self, state):
            if state.global_step == 20:
                state.set_weights(state.get_weights())

    kb, devices, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    info = {}
    for name in sys.argv[4:]:
        spec = load_spec(os.path.join(root, name + ".yaml"), overrides={"trainer.devices": devices, "keras_backend": kb})
        trainer = UnifiedTrainer(spec, run_dir=os.path.join(root, f"{name}-{kb}-{devices}"), callbacks=[Poke()])
        trainer.fit()
        reps = trainer._adapter.replicas
        if reps is None:
            info[name] = 1
        elif kb == "tensorflow":
            info[name] = reps.strategy.num_replicas_in_sync
        else:  # the weights live on every device of the mesh
            info[name] = len(trainer._adapter.model.trainable_variables[0].value.sharding.device_set)
    if devices > 1:  # interrupted in the middle of epoch 2 (15 optimizer steps per epoch), then resumed
        spec = load_spec(os.path.join(root, "acc.yaml"), overrides={"trainer.devices": devices, "keras_backend": kb})
        cut = os.path.join(root, f"cut-{kb}")
        try:
            UnifiedTrainer(spec, run_dir=cut, callbacks=[Poke(), SignalAt(20)]).fit()
            raise SystemExit("the SIGTERM did not stop the run")
        except BaseException as e:
            if type(e).__name__ != "Interrupted":
                raise
        UnifiedTrainer(spec, callbacks=[Poke()]).fit(resume=cut)
    if devices == 1:  # the framework started with one device in this process: 2 are refused, never half-made
        spec = load_spec(os.path.join(root, "sgd.yaml"), overrides={"trainer.devices": 2, "keras_backend": kb})
        try:
            UnifiedTrainer(spec, run_dir=os.path.join(root, f"late-{kb}")).fit()
            info["late"] = "trained"
        except Exception as e:
            info["late"] = f"{type(e).__name__}: {e}"
    with open(os.path.join(root, f"info-{kb}-{devices}.json"), "w") as f:
        json.dump(info, f)
    """
)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _column(run_dir: Path, key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in _rows(run_dir) if r.get(key)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, processes: Any) -> dict[str, Any]:
    """Start every process at once; wait for all; name -> (returncode, stderr)."""
    root = tmp_path_factory.mktemp("keras_devices")
    for name, spec in SPECS.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "logging": {"dir": str(root / "runs")}}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    env.pop("KERAS_BACKEND", None)
    jobs: dict[str, list[str]] = {}
    for kb in BACKENDS:
        for devices in (1, 2):
            jobs[f"{kb}-{devices}"] = [sys.executable, "-c", SCRIPT, kb, str(devices), str(root), *SPECS]
    if importlib.util.find_spec("torch") is not None:
        jobs["torch-refused"] = [sys.executable, "-m", "unified", "run", str(root / "sgd.yaml"), "--keras-backend",
                                 "torch", "--set", "trainer.devices=2", "--run-dir", str(root / "refused")]
    out: dict[str, Any] = {"root": root}
    out.update({name: (code, stderr) for name, (code, _, stderr) in processes(jobs, env=env, cwd=ROOT).items()})
    return out


def _pair(runs: dict[str, Any], kb: str) -> Path:
    for devices in (1, 2):
        code, stderr = runs[f"{kb}-{devices}"]
        assert code == 0, f"keras/{kb} devices={devices} exited {code}:\n{stderr[-4000:]}"
    return runs["root"]


@pytest.mark.parametrize("kb", BACKENDS)
@pytest.mark.parametrize("name", list(SPECS))
def test_two_devices_match_one_per_step(runs, kb, name):
    root = _pair(runs, kb)
    one, two = root / f"{name}-{kb}-1", root / f"{name}-{kb}-2"
    a, b = _column(one, "train/loss"), _column(two, "train/loss")
    assert a.keys() == b.keys() and len(a) >= 6, (len(a), len(b))
    gap = max(abs(a[k] - b[k]) for k in a)
    print(f"keras/{kb} {name}: devices 2 vs 1 over {len(a)} steps: max |train/loss gap| {gap:.3g}")
    assert gap <= TOL
    for key in ("val/loss", "val/accuracy", "val/f1_macro"):
        va, vb = _column(one, key), _column(two, key)
        assert va.keys() == vb.keys() and va
        assert max(abs(va[k] - vb[k]) for k in va) <= TOL, key
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s2["status"] == "completed" and s2["global_step"] == s1["global_step"]
    info = json.loads((root / f"info-{kb}-2.json").read_text())
    assert info[name] == 2  # two replicas really ran (not one device twice as slow)


@pytest.mark.parametrize("kb", BACKENDS)
def test_weights_checkpoints_and_export_are_single_replica(runs, kb):
    root = _pair(runs, kb)
    one, two = root / f"sgd-{kb}-1", root / f"sgd-{kb}-2"
    with np.load(one / "checkpoints" / "final.npz") as f1, np.load(two / "checkpoints" / "final.npz") as f2:
        assert sorted(f1.files) == sorted(f2.files)
        for k in f1.files:
            assert f1[k].shape == f2[k].shape
            assert np.abs(f1[k] - f2[k]).max() <= TOL, k
    assert (two / "checkpoints" / "last.ckpt").is_file()
    manifest = json.loads((two / "export" / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    assert entry["format"] == "keras" and entry["verification"]["passed"], entry


@pytest.mark.parametrize("kb", BACKENDS)
def test_interrupt_and_resume_on_two_devices_is_exact(runs, kb):
    root = _pair(runs, kb)
    full, cut = _rows(root / f"acc-{kb}-2"), _rows(root / f"cut-{kb}")
    assert (root / f"cut-{kb}" / "checkpoints" / "interrupted.ckpt").is_file()
    assert json.loads((root / f"cut-{kb}" / "summary.json").read_text())["status"] == "completed"
    keys = ("epoch", "step", "train/loss", "lr", "val/loss", "val/accuracy")
    assert [[r.get(k) for k in keys] for r in cut] == [[r.get(k) for k in keys] for r in full]


@pytest.mark.parametrize("kb", BACKENDS)
def test_two_devices_after_one_in_the_same_process_are_refused(runs, kb):
    root = _pair(runs, kb)
    late = json.loads((root / f"info-{kb}-1.json").read_text())["late"]
    assert late.startswith("NotSupportedError") and "new process" in late, late
    assert not (root / f"late-{kb}").exists() or not any((root / f"late-{kb}").iterdir())


def test_keras_on_torch_with_two_devices_is_refused(runs):
    if "torch-refused" not in runs:
        pytest.skip("needs torch")
    code, stderr = runs["torch-refused"]
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1 and "trainer.devices" in lines[0] and "torch" in lines[0], lines
    assert "Traceback" not in stderr
    root = runs["root"]
    assert not (root / "refused").exists() or not any((root / "refused").iterdir())


def test_jax_padding_weights_are_exact():
    """JAX's batch axis must divide by the devices: a padded sample repeats the first ones with weight 0."""
    from unified.adapters.keras_replicas import _padded

    x = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    y = np.arange(5)
    ((px, py, w),) = list(_padded(iter([(x, y)]), 4))
    assert px.shape == (8, 2) and list(py) == [0, 1, 2, 3, 4, 0, 1, 2]
    assert np.allclose(w[:5], 0.2) and not w[5:].any()
    ((px, py, w),) = list(_padded(iter([(x[:1], y[:1])]), 2))  # a batch smaller than the devices
    assert list(py) == [0, 0] and list(w) == [1.0, 0.0]
    ((px, py, w),) = list(_padded(iter([(x[:4], y[:4])]), 2))  # divisible: untouched
    assert len(py) == 4 and np.allclose(w, 0.25)
