"""An image folder with augmentation and a worker process trains the same on every target.

The image-folder example (``examples/make_image_folder.py``), tiny: 10 classes x 6 PNGs of 8x8, 2 epochs,
``augment: {hflip, crop_padding}`` and ``num_workers: 1``. Every target (each backend, Keras on each tensor
backend) is compared with the reference per step: the batches are decoded, augmented and standardized by
the one fetch path, so the per-step train/loss may differ only by the frameworks' arithmetic (SGD: 1e-5).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEPS = 2 * 3  # 2 epochs of ceil(48 train images / batch 16)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("make_image_folder", EXAMPLES / "make_image_folder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = tmp_path_factory.mktemp("conformance-images") / "digits"
    mod.make_image_folder(root, per_class=6, size=8, seed=0)
    return root


@pytest.fixture
def image_runs(image_folder, run_target_shared):
    """target name -> RunResult of the tiny image-folder spec, every target trained once per session."""
    import yaml

    spec = yaml.safe_load((EXAMPLES / "imagefolder.yaml").read_text())
    spec["data"].update({"source": f"imagefolder:{image_folder}", "image": {"size": [8, 8], "channels": 3},
                         "augment": {"hflip": True, "crop_padding": 2}, "num_workers": 1, "batch_size": 16})
    spec["model"].update({"channels": [4, 8], "hidden": [16]})
    spec["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    spec["trainer"] = {"max_epochs": 2, "log_every_n_steps": 1, "progress_bar": False}
    spec["callbacks"] = []
    Job = run_target_shared.Job
    runs = run_target_shared.many([Job(t, dict(spec), name="imagefolder") for t in run_target_shared.targets])
    return {t.name: runs[f"{t.name}/imagefolder"] for t in run_target_shared.targets}


def test_imagefolder_with_augmentation_and_workers_agrees_step_for_step(target, image_runs, run_target,
                                                                        agreement_gaps):
    ref = run_target.reference_for(target)
    if ref is None:
        pytest.skip("needs a second target to compare with")
    got, want = image_runs[target.name].ok(), image_runs[ref.name].ok()
    assert [r["step"] for r in got.step_rows()] == [str(s) for s in range(1, STEPS + 1)]
    assert len(want.step_losses()) == STEPS
    gap = float(np.max(np.abs(got.step_losses() - want.step_losses())))
    agreement_gaps.setdefault(target.name, {})["imagefolder"] = gap
    assert gap <= 1e-5, f"{target.name} vs {ref.name}: per-step train/loss differs by {gap:.2e}"
    assert abs(got.metrics["val/loss"] - want.metrics["val/loss"]) <= 1e-5
