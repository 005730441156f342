"""Data taken from folders and disk: imagefolder:, memory-mapped npz/npy, seeded augmentation, worker processes.

Everything here is numpy (and Pillow) except the last tests, which feed the same batches through the torch
loaders and the Keras data path and compare them byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from unified.cli import main
from unified.data import load_dataset
from unified.data.images import load_image
from unified.data.stores import ArrayStore, ImageFileStore
from unified.errors import DataError, TrainingError
from unified.spec import Spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example_module():
    spec = importlib.util.spec_from_file_location("make_image_folder", EXAMPLES / "make_image_folder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """10 class folders of 8 RGB 8x8 PNGs each (the example's generator, small)."""
    root = tmp_path_factory.mktemp("imagefolder") / "digits"
    assert _example_module().make_image_folder(root, per_class=8, size=8, seed=0) == 80
    return root


def image_spec(root: Path, **data) -> Spec:
    base = {"source": f"imagefolder:{root}", "batch_size": 8, "standardize": True}
    return Spec.from_dict({"seed": 0, "data": {**base, **data}, "model": {"arch": "cnn", "channels": [4],
                                                                             "hidden": [8]}})


def decoded(root: Path, ds, split: str, rows, size=(8, 8), channels=3) -> np.ndarray:
    """The raw images of ``rows`` of ``split`` decoded one by one with load_image (the serve decoder)."""
    store = ds.split(split).x
    return np.stack([load_image(store.paths[r], size=size, channels=channels) for r in store.absolute(rows)])


# -- imagefolder: -----------------------------------------------------------------------------------------

def test_imagefolder_classes_are_sorted_folder_names_and_files_are_not_decoded_up_front(folder):
    ds = load_dataset(image_spec(folder))
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.sample_shape == (3, 8, 8) and ds.input_dtype == "float32" and ds.image == {"size": [8, 8], "channels": 3}
    assert len(ds.train) + len(ds.val) == 80
    for part in (ds.train, ds.val):  # the splits hold file names, not pixels
        assert isinstance(part.x, ImageFileStore) and not part.in_memory
    # a file's label is its folder, and a fetched val batch is load_image's pixels, standardized per channel
    rows = np.arange(5)
    x, y = ds.fetch("val", rows)
    paths = ds.val.x.paths[ds.val.x.absolute(rows)]
    assert [ds.classes[c] for c in y] == [Path(p).parent.name for p in paths]
    want = ((decoded(folder, ds, "val", rows).astype(np.float64) - ds.mean) / ds.std).astype(np.float32)
    assert x.dtype == np.float32 and np.array_equal(x, want)
    assert ds.mean.shape == ds.std.shape == (3, 1, 1)


def test_standardization_streams_to_the_in_ram_figures(folder):
    ds = load_dataset(image_spec(folder))
    every = decoded(folder, ds, "train", np.arange(len(ds.train)))
    axes = (0, 2, 3)
    assert np.array_equal(ds.mean.ravel(), every.astype(np.float64).mean(axis=axes).astype(np.float32))
    assert np.array_equal(ds.std.ravel(), every.astype(np.float64).std(axis=axes).astype(np.float32))


def test_image_size_resizes_and_channels_1_is_grayscale(folder):
    ds = load_dataset(image_spec(folder, image={"size": [12, 10], "channels": 1}))
    assert ds.sample_shape == (1, 12, 10) and ds.image == {"size": [12, 10], "channels": 1}
    x, _ = ds.fetch("val", [0, 1])
    want = decoded(folder, ds, "val", [0, 1], size=(12, 10), channels=1)
    assert np.array_equal(x, ((want.astype(np.float64) - ds.mean) / ds.std).astype(np.float32))


def _write_png(path: Path, w: int, h: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(path)


def _exit2(tmp_path: Path, data: dict, capsys, task: str = "classification") -> str:
    spec = {"name": "bad", "task": task, "data": data, "model": {"arch": "cnn"}, "trainer": {"max_epochs": 1},
            "logging": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_folders_exit_2_with_one_line(tmp_path, capsys):
    root = tmp_path / "f"
    root.mkdir()
    _write_png(root / "loose.png", 4, 4)
    src = {"source": f"imagefolder:{root}"}
    line = _exit2(tmp_path, src, capsys)
    assert "no class folders" in line and str(root) in line and "1 image files directly" in line

    for i in range(3):
        _write_png(root / "cat" / f"a{i}.png", 4, 4)
    (root / "dog").mkdir()
    line = _exit2(tmp_path, src, capsys)
    assert "class folder 'dog' holds no images" in line

    for i in range(3):
        _write_png(root / "dog" / f"b{i}.png", 6, 5)
    line = _exit2(tmp_path, src, capsys)  # mixed sizes: both files and sizes named
    assert "data.image.size" in line and "a0.png is 4x4" in line and "b0.png is 6x5" in line
    _exit2_ok = {**src, "image": {"size": [4, 4]}}
    spec = Spec.from_dict({"data": _exit2_ok, "model": {"arch": "cnn"}})
    assert load_dataset(spec).sample_shape == (3, 4, 4)  # resized: fine

    (root / "dog" / "notes.txt").write_text("hello")
    line = _exit2(tmp_path, _exit2_ok, capsys)
    assert str(root / "dog" / "notes.txt") in line and "not an image file" in line
    (root / "dog" / "notes.txt").unlink()

    (root / "dog" / "broken.png").write_bytes(b"this is no png")
    line = _exit2(tmp_path, _exit2_ok, capsys)
    assert str(root / "dog" / "broken.png") in line and "not a readable image" in line
    (root / "dog" / "broken.png").unlink()

    line = _exit2(tmp_path, _exit2_ok, capsys, task="regression")
    assert "task must be classification or binary" in line
    line = _exit2(tmp_path, {"source": f"imagefolder:{tmp_path / 'missing'}"}, capsys)
    assert "directory not found" in line


def test_spec_fields_refused_where_they_do_not_apply(tmp_path, capsys):
    assert "data.image: applies to imagefolder:" in _exit2(tmp_path, {"source": "sklearn:digits", "image": {}}, capsys)
    assert "data.mmap: memory-maps npz:, npy:" in _exit2(tmp_path, {"source": "csv:x.csv", "mmap": True}, capsys)
    assert "data.image.channels: expected 1" in _exit2(tmp_path, {"source": "imagefolder:x",
                                                                   "image": {"channels": 2}}, capsys)
    line = _exit2(tmp_path, {"source": "sklearn:digits", "augment": {"hflip": True}}, capsys)
    assert "data.augment" in line and "applies to images [C, H, W]" in line and "[64]" in line
    spec = Spec.from_dict({"data": {"source": "imagefolder:d", "image": {"size": [8, 8], "channels": 1},
                                    "augment": {"hflip": True, "crop_padding": 2}, "num_workers": 2}})
    assert Spec.from_yaml(spec.to_yaml()).data == spec.data  # round trip


# -- augmentation -------------------------------------------------------------------------------------------

def test_augmentation_is_a_function_of_seed_epoch_and_sample_not_of_the_batching(folder):
    aug = {"hflip": True, "crop_padding": 2}
    small = load_dataset(image_spec(folder, augment=aug, batch_size=4))
    large = load_dataset(image_spec(folder, augment=aug, batch_size=64))
    rows = np.array([5, 0, 17, 3])
    x_small = np.concatenate([small.fetch("train", rows[i:i + 1], 1)[0] for i in range(len(rows))])
    assert np.array_equal(x_small, large.fetch("train", rows, 1)[0])
    assert not np.array_equal(large.fetch("train", rows, 0)[0], large.fetch("train", rows, 1)[0])
    # exactly the documented rule: params from default_rng([seed, 3, epoch]) for all train samples
    raw = decoded(folder, large, "train", rows)
    n, p = len(large.train), 2
    rng = np.random.default_rng([0, 3, 1])
    flip = rng.random(n) < 0.5
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
    want = []
    for k, r in enumerate(rows):
        padded = np.pad(raw[k], ((0, 0), (p, p), (p, p)))
        s = padded[:, dy[r]:dy[r] + 8, dx[r]:dx[r] + 8]
        want.append(s[:, :, ::-1] if flip[r] else s)
    want = ((np.stack(want).astype(np.float64) - large.mean) / large.std).astype(np.float32)
    assert np.array_equal(large.fetch("train", rows, 1)[0], want)
    # validation is never augmented
    assert np.array_equal(large.fetch("val", [0, 1], 1)[0], large.fetch("val", [0, 1], 0)[0])


def test_augmented_in_ram_images_are_fetched_raw_then_standardized():
    spec = Spec.from_dict({"data": {"source": "sklearn:digits", "shape": [1, 8, 8], "standardize": True,
                                    "augment": {"crop_padding": 1}}, "model": {"arch": "cnn"}})
    ds = load_dataset(spec)
    assert isinstance(ds.train.x, ArrayStore) and not ds.train.in_memory and ds.val.in_memory
    plain = load_dataset(Spec.from_dict({"data": {"source": "sklearn:digits", "shape": [1, 8, 8],
                                                  "standardize": True}, "model": {"arch": "cnn"}}))
    assert np.array_equal(ds.mean, plain.mean) and np.array_equal(ds.val.x, plain.val.x)


# -- worker processes -----------------------------------------------------------------------------------------

def test_workers_give_the_very_batches_of_no_workers(folder):
    aug = {"hflip": True, "crop_padding": 1}
    alone = load_dataset(image_spec(folder, augment=aug))
    helped = load_dataset(image_spec(folder, augment=aug, num_workers=2))
    try:
        assert np.array_equal(helped.mean, alone.mean) and np.array_equal(helped.std, alone.std)
        assert helped.workers is not None and helped.workers.started  # the statistics were streamed in them
        for epoch in (0, 1):
            got = list(helped.iter_batches("train", helped.epoch_batches(epoch), epoch))
            want = list(alone.iter_batches("train", alone.epoch_batches(epoch), epoch))
            assert len(got) == len(want) == alone.steps_per_epoch()
            for (gx, gy), (wx, wy) in zip(got, want):
                assert np.array_equal(gx, wx) and np.array_equal(gy, wy)
        val = helped.eval_batches("val")
        for (gx, _), idx in zip(helped.iter_batches("val", val), val):
            assert np.array_equal(gx, alone.fetch("val", idx)[0])
        # stopping early mid-epoch drops what was fetched ahead; the next pass is whole
        it = helped.iter_batches("train", helped.epoch_batches(2), 2)
        next(it)
        it.close()
        assert len(list(helped.iter_batches("train", helped.epoch_batches(2), 2))) == helped.steps_per_epoch()
    finally:
        helped.close()
    assert not helped.workers.started


def test_a_corrupt_image_found_while_decoding_names_the_file(folder, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    victim = sorted((root / "3").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:60])  # a valid header, the pixel data cut off
    for workers in (0, 1):
        with pytest.raises(DataError) as e:
            load_dataset(image_spec(root, num_workers=workers))  # the streamed statistics decode every train image
        msg = str(e.value)
        assert "\n" not in msg and str(victim) in msg


def test_worker_pool_times_out_and_reports_a_dead_worker(monkeypatch):
    import os

    from unified.data.workers import WorkerPool

    monkeypatch.setenv("UNIFIED_DATA_TIMEOUT_S", "1")
    pool = WorkerPool(1)
    try:
        assert pool.map(abs, [(-3,), (4,)]) == [3, 4]
        t = time.monotonic()
        with pytest.raises(TrainingError, match="no batch from the worker processes in 1 s"):
            pool.map(time.sleep, [(30,)])
        assert time.monotonic() - t < 10
        with pytest.raises(TrainingError, match="a worker process died"):
            pool.map(os._exit, [(3,)])
        assert pool.map(abs, [(-1,)]) == [1]  # started again
    finally:
        pool.close()


# -- memory maps -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    tmp = tmp_path_factory.mktemp("mmap")
    x = d.images[:, None].astype(np.float32)  # [N, 1, 8, 8]
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", d.target)
    np.savez(tmp / "plain.npz", x=x, y=d.target)
    np.savez_compressed(tmp / "packed.npz", x=x, y=d.target)
    return {"dir": tmp, "x": x, "y": d.target}


@pytest.mark.parametrize("source", ["npy:{d}/x.npy,{d}/y.npy", "npz:{d}/plain.npz"])
def test_mmap_keeps_the_array_on_disk_and_gives_the_in_ram_batches(digit_files, source):
    src = source.format(d=digit_files["dir"])
    data = {"source": src, "standardize": True, "batch_size": 16}
    ram = load_dataset(Spec.from_dict({"data": data, "model": {"arch": "cnn"}}))
    mapped = load_dataset(Spec.from_dict({"data": {**data, "mmap": True}, "model": {"arch": "cnn"}}))
    for part in (mapped.train, mapped.val):
        assert isinstance(part.x, ArrayStore) and isinstance(part.x.array, np.memmap) and not part.in_memory
    assert ram.train.in_memory and not isinstance(ram.train.x, np.memmap)
    assert np.array_equal(mapped.mean, ram.mean) and np.array_equal(mapped.std, ram.std)
    for epoch in (0, 1):
        for (mx, my), idx in zip(mapped.iter_batches("train", mapped.epoch_batches(epoch), epoch),
                                 ram.epoch_batches(epoch)):
            assert np.array_equal(mx, ram.train.x[idx]) and np.array_equal(my, ram.train.y[idx])
    assert np.array_equal(mapped.fetch("val", np.arange(len(mapped.val)))[0], ram.val.x)
    # a memory-mapped store pickles as its file and offset, never its data (what worker jobs carry)
    assert len(pickle.dumps(mapped.train.x)) < 20_000 < digit_files["x"].nbytes
    assert np.array_equal(pickle.loads(pickle.dumps(mapped.train.x)).take([0, 5]), mapped.train.x.take([0, 5]))


def test_mmap_of_a_compressed_npz_exits_2(digit_files, tmp_path, capsys):
    line = _exit2(tmp_path, {"source": f"npz:{digit_files['dir']}/packed.npz", "mmap": True}, capsys)
    assert "data.mmap" in line and "compressed" in line and "packed.npz" in line


def test_mmap_checks_nan_by_streaming(tmp_path, capsys):
    x = np.zeros((20, 3), dtype=np.float32)
    x[7, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    line = _exit2(tmp_path, {"source": f"npy:{tmp_path}/x.npy,{tmp_path}/y.npy", "mmap": True}, capsys)
    assert "1 NaN/inf value" in line


def test_a_run_on_a_memory_map_trains_like_the_in_ram_run(digit_files, tmp_path):
    pytest.importorskip("torch")
    from unified import UnifiedTrainer
    from unified.registry import installed_backends

    if "torch" not in installed_backends():
        pytest.skip("the torch backend is not installed")
    src = f"npy:{digit_files['dir']}/x.npy,{digit_files['dir']}/y.npy"
    losses = []
    for mmap in (False, True):
        spec = {"name": f"mm{int(mmap)}", "data": {"source": src, "standardize": True, "mmap": mmap},
                "model": {"arch": "cnn", "channels": [4], "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.05},
                "trainer": {"max_epochs": 1, "log_every_n_steps": 1, "progress_bar": False},
                "logging": {"dir": str(tmp_path)}}
        run_dir = UnifiedTrainer(spec, backend="torch").fit().run_dir
        import csv

        with open(run_dir / "metrics.csv", newline="") as f:
            losses.append([r["train/loss"] for r in csv.DictReader(f) if r["train/loss"]])
    assert len(losses[0]) == 45 and losses[0] == losses[1]


# -- the same batches on every backend's data path, export ------------------------------------------------------------

def _ctx(ds):
    return SimpleNamespace(dataset=ds, user_loaders={})


def test_torch_loader_and_keras_data_path_give_the_same_augmented_batches(folder):
    pytest.importorskip("torch")
    keras_mod = pytest.importorskip("keras")
    from unified.adapters import torch_common as tc
    from unified.adapters.keras import KerasAdapter

    ds = load_dataset(image_spec(folder, augment={"hflip": True, "crop_padding": 2}, num_workers=1))
    try:
        loader = tc.train_loader(_ctx(ds))
        torch_batches = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            torch_batches += [(x.numpy(), y.numpy()) for x, y in loader]
        kb = keras_mod.backend.backend()
        stub = SimpleNamespace(ctx=SimpleNamespace(dataset=ds, spec=SimpleNamespace(task="classification")), kb=kb)
        stub._targets = lambda y: KerasAdapter._targets(stub, y)
        data = KerasAdapter._train_data(stub, 2)
        keras_batches = [(np.asarray(x), np.asarray(y)) for x, y in (data.as_numpy_iterator() if kb == "tensorflow"
                                                                      else data)]
        assert len(torch_batches) == len(keras_batches) == 2 * ds.steps_per_epoch()
        for (tx, ty), (kx, ky) in zip(torch_batches, keras_batches):
            assert tx.dtype == kx.dtype == np.float32 and np.array_equal(tx, kx) and np.array_equal(ty, ky)
        want = [ds.fetch("train", idx, e) for e in (0, 1) for idx in ds.epoch_batches(e)]
        assert all(np.array_equal(t[0], w[0]) for t, w in zip(torch_batches, want))
        val = tc.eval_loader(_ctx(ds), "val")
        assert np.array_equal(np.concatenate([x.numpy() for x, _ in val]), ds.fetch("val", np.arange(len(ds.val)))[0])
    finally:
        ds.close()


def test_imagefolder_run_exports_verified_and_records_the_decoder(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from unified import UnifiedTrainer
    from unified.export.preprocess import Preprocess
    from unified.registry import installed_backends

    if "torch" not in installed_backends():
        pytest.skip("the torch backend is not installed")
    spec = {"name": "imgexp", "data": {"source": f"imagefolder:{folder}", "standardize": True,
                                       "augment": {"hflip": True}, "num_workers": 1},
            "model": {"arch": "cnn", "channels": [4], "hidden": [8]},
            "trainer": {"max_epochs": 1, "progress_bar": False}, "logging": {"dir": str(tmp_path)},
            "export": {"formats": ["onnx"]}}
    trainer = UnifiedTrainer(spec, backend="torch")
    run_dir = trainer.fit().run_dir
    pre = json.loads((run_dir / "preprocess.json").read_text())
    assert pre["image"] == {"size": [8, 8], "channels": 3} and pre["sample_shape"] == [3, 8, 8]
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, 3, 8, 8]
    (art,) = manifest["artifacts"]
    assert art["verification"]["passed"] is True and art["verification"]["probe"].startswith("val split")
    # what `unified serve` does with an upload: load_image(bytes, size, channels), then the standardization
    ds = load_dataset(Spec.from_dict(spec))
    path = ds.val.x.paths[ds.val.x.absolute([0])[0]]
    p = Preprocess.load(run_dir)
    x = p.apply(load_image(Path(path).read_bytes(), size=p.image["size"], channels=p.image["channels"])[None])
    assert np.array_equal(x, ds.fetch("val", [0])[0])


def test_fetched_train_loader_resumes_mid_epoch_with_that_epochs_augmentation(folder):
    pytest.importorskip("torch")
    from unified.adapters import torch_common as tc

    ds = load_dataset(image_spec(folder, augment={"hflip": True, "crop_padding": 1}))
    loader = tc.train_loader(_ctx(ds))
    loader.sampler.resume_at(1, 3)  # what a checkpoint taken after epoch 2's third batch restores
    got = [x.numpy() for x, _ in loader]
    want = [ds.fetch("train", idx, 1)[0] for idx in ds.epoch_batches(1)[3:]]
    assert len(got) == len(want) == ds.steps_per_epoch() - 3 and len(loader) == ds.steps_per_epoch()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert np.array_equal(next(iter(loader))[0].numpy(), ds.fetch("train", ds.epoch_batches(2)[0], 2)[0])


def test_slot_files_of_killed_runs_are_swept(monkeypatch):
    from unified.data import workers

    shm = workers._shm_dir()
    if shm is None:
        pytest.skip("no /dev/shm")
    stale = Path(shm) / "unified-data-999999999-leftover"  # no process has that id
    stale.write_bytes(b"x")
    monkeypatch.setattr(workers, "_SWEPT", False)
    slots = workers._Slots(2, 16)
    try:
        assert not stale.exists() and Path(slots.path).exists()
    finally:
        slots.close()
    assert not Path(slots.path).exists()
