"""What keeps an image folder's setup short: ``data.num_workers`` processes start before a per-batch source is
read (their start-up overlaps it), and PNG sizes come from the IHDR chunk (Pillow for anything else)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unified.data import build as build_module
from unified.data import load_dataset
from unified.errors import DataError
from unified.spec import Spec


def _write_pngs(root: Path, per_class: int = 3, size: int = 6) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(root / c / f"{i}.png")


def _spec(source: str, **data) -> Spec:
    return Spec.from_dict({"seed": 0, "data": {"source": source, "batch_size": 2, "num_workers": 1, **data},
                           "model": {"arch": "cnn", "channels": [2], "hidden": [4]}})


def test_workers_are_started_before_the_folder_is_read_and_serve_the_dataset(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    _write_pngs(root)
    from unified.data.workers import _POOLS

    before = {id(p) for p in _POOLS if p.started}
    seen = {}
    read = build_module.read_source

    def spy(data, base_dir=None):
        seen["started"] = [p for p in _POOLS if p.started and id(p) not in before]
        return read(data, base_dir)

    monkeypatch.setattr(build_module, "read_source", spy)
    ds = load_dataset(_spec(f"imagefolder:{root}", val_fraction=0.25))
    try:
        assert len(seen["started"]) == 1 and ds.workers is seen["started"][0]  # the same processes, started first
        alone = load_dataset(_spec(f"imagefolder:{root}", val_fraction=0.25, num_workers=0))
        got = list(ds.iter_batches("train", ds.epoch_batches(0)))
        want = list(alone.iter_batches("train", alone.epoch_batches(0)))
        assert len(got) == len(want) > 0
        assert all(np.array_equal(g[0], w[0]) for g, w in zip(got, want))
    finally:
        ds.close()


def test_workers_started_early_are_stopped_when_the_source_is_refused(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    pools = []
    real = build_module._early_pool

    def keep(d):
        pool = real(d)
        pools.append(pool)
        return pool

    monkeypatch.setattr(build_module, "_early_pool", keep)
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(_spec(f"imagefolder:{tmp_path / 'empty'}"))
    assert len(pools) == 1 and pools[0] is not None and not pools[0].started


def test_in_ram_sources_start_no_workers_early(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 1, 4, 4), np.float32))
    np.save(tmp_path / "y.npy", np.arange(8) % 2)
    assert build_module._early_pool(_spec(f"npy:{tmp_path}/x.npy,{tmp_path}/y.npy").data) is None  # loaded whole
    assert build_module._early_pool(_spec("sklearn:digits").data) is None
    pool = build_module._early_pool(_spec(f"npy:{tmp_path}/x.npy,{tmp_path}/y.npy", mmap=True).data)
    try:
        assert pool is not None and pool.started
    finally:
        pool.close()


# -- image headers: PNG sizes read directly, everything else (and any doubt) through Pillow ----------------------

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "1", "I;16", "LA"])
def test_png_sizes_read_directly_match_pillow(tmp_path, mode):
    from PIL import Image

    from unified.data.imagefolder import _png_size, image_sizes

    for interlace in (0, 1):
        f = tmp_path / f"{interlace}.png"
        Image.new(mode, (7, 5)).save(f, interlace=interlace)
        with Image.open(f) as img:
            assert _png_size(str(f), Image.MAX_IMAGE_PIXELS) == img.size == (7, 5)
        assert image_sizes([str(f)]) == [(7, 5)]


def test_a_png_header_in_doubt_goes_to_pillow_and_is_refused_by_name(tmp_path):
    from PIL import Image

    from unified.data.imagefolder import _png_size, image_sizes

    good = tmp_path / "good.png"
    Image.new("RGB", (6, 4)).save(good)
    jpeg = tmp_path / "photo.png"  # a JPEG under a .png name: Pillow identifies it
    Image.new("RGB", (3, 2)).save(jpeg, format="JPEG")
    bad_crc = tmp_path / "crc.png"
    raw = bytearray(good.read_bytes())
    raw[20] ^= 1  # the width's low byte: the IHDR CRC no longer matches
    bad_crc.write_bytes(bytes(raw))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:20])
    assert _png_size(str(good), None) == (6, 4)
    assert _png_size(str(good), 23) is None  # more pixels than allowed: Pillow's decompression-bomb rule decides
    for f in (jpeg, bad_crc, cut):
        assert _png_size(str(f), None) is None
    assert image_sizes([str(jpeg)]) == [(3, 2)]
    for f in (bad_crc, cut):
        with pytest.raises(DataError) as e:
            image_sizes([str(good), str(f)])
        assert str(f) in str(e.value) and "\n" not in str(e.value)
