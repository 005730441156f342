"""Image pipeline throughput: the facade's ``imagefolder:`` batches vs torch's DataLoader and tf.data.

Run:  python benchmarks/data_pipeline.py [--n 10000] [--size 32] [--resize 32] [--batch-size 64]
                                         [--workers 0,2] [--repeats 7] [--augment] [--root DIR] [--json OUT]

A folder of ``--n`` PNGs (``--size`` x ``--size`` RGB, 10 classes, one subfolder per class: the layout of
torchvision's ImageFolder) is written into a temporary folder (or ``--root``, kept and reused when it already
holds ``--n`` images), then one epoch of it is read three ways, each decoding, resizing to ``--resize`` and
scaling to float32 ``[0, 1]`` in channels-first batches of ``--batch-size``, shuffled:

* ``facade``: ``unified.data.load_dataset`` of an ``imagefolder:`` spec (``val_fraction: 0``,
  ``standardize: false``, ``data.num_workers: N``), then ``Dataset.iter_batches("train", epoch_batches(0))``:
  the numpy batches the torch and Keras adapters turn into tensors (``torch.from_numpy``: no copy).
* ``torch``: ``DataLoader(ImageFolder(root, transform=Compose([Resize, ToTensor])), batch_size, shuffle=True,
  num_workers=N)``; torchvision's classes when torchvision is installed, else the same code written out
  (``pil_loader``: ``Image.open(f).convert("RGB")``, ``img.resize((w, h), BILINEAR)``, ToTensor's
  ``from_numpy(np.array(img)).permute(2, 0, 1).contiguous().float().div(255)``, ``default_collate``).
* ``tf``: ``tf.data.Dataset.list_files(root/*/*.png, shuffle=True)`` -> ``map(read_file, decode_png,
  resize, / 255, transpose to C,H,W, label from the folder name; num_parallel_calls=AUTOTUNE)`` ->
  ``batch`` -> ``prefetch(AUTOTUNE)``. tf.data has no worker count: AUTOTUNE uses every core for each N.

``--augment`` adds the train augmentation on every side: random crop with 4 px zero padding and a horizontal
flip (facade ``data.augment: {crop_padding: 4, hflip: true}``; torchvision ``RandomCrop(padding=4)`` +
``RandomHorizontalFlip``; ``tf.image`` pad + ``random_crop`` + ``random_flip_left_right``). ``--standardize``
gives the facade ``data.standardize: true``: its setup then decodes the folder once (in the workers) for the
per-channel statistics, and each batch is standardized; the other sides are left as they are.

Method: each measurement is one fresh process (``--side``) that builds its pipeline (timed apart: ``setup``),
then times one epoch from the first ``iter()`` to the last batch (worker start-up included where it happens
in that window: torch forks its workers there; the facade's start while ``load_dataset`` runs, as in a
training run). Rounds alternate the sides (order rotated per round) after one discarded warm-up round (it
also warms the page cache); the table gives medians over ``--repeats`` rounds and the ratio
facade / max(torch, tf) of the medians (target >= 0.9), the median of the per-round ratios (each round's
sides run back to back, under similar load on a shared machine) and the ratio with the setup counted (a
run pays it once). Each side's CPU time (process + its worker processes, libraries' import excluded,
setup included) per 100 images is printed beside it: unlike images/s it barely moves with the load of
other processes on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("facade", "torch", "tf")
CLASSES = 10
PAD = 4


# -- the image folder ----------------------------------------------------------------------------------
def write_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` RGB PNGs of ``size`` x ``size`` in ``root/<0..9>/<i>.png``: a smooth random colour field per
    image (a 4x4 grid upscaled) plus noise, so files compress like small photos (~2-3 kB each)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % CLASSES
        grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(grid, "RGB").resize((size, size), Image.BILINEAR), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, size=img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(root / str(c) / f"{i:05d}.png")


def count_images(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*.png")) if root.is_dir() else 0


# -- one side, in its own process ----------------------------------------------------------------------
def run_facade(root: Path, a: argparse.Namespace) -> tuple[float, float, int]:
    from unified.data import load_dataset
    from unified.spec import Spec

    data: dict[str, Any] = {"source": f"imagefolder:{root}", "image": {"size": [a.resize, a.resize], "channels": 3},
                            "standardize": a.standardize, "val_fraction": 0.0, "test_fraction": 0.0,
                            "batch_size": a.batch_size, "shuffle": True, "num_workers": a.workers}
    if a.augment:
        data["augment"] = {"crop_padding": PAD, "hflip": True}
    spec = Spec.from_dict({"seed": 0, "data": data, "model": {"arch": "cnn", "channels": [8]}})
    t0 = time.perf_counter()
    ds = load_dataset(spec)
    t1 = time.perf_counter()
    seen = 0
    for x, y in ds.iter_batches("train", ds.epoch_batches(0), 0):
        assert x.dtype == np.float32 and x.shape[1:] == (3, a.resize, a.resize)
        seen += len(x)
    t2 = time.perf_counter()
    ds.close()
    return t1 - t0, t2 - t1, seen


def _torch_dataset(root: Path, a: argparse.Namespace) -> tuple[Any, str]:
    try:
        from torchvision import datasets, transforms

        steps = [transforms.Resize((a.resize, a.resize))]
        if a.augment:
            steps += [transforms.RandomCrop(a.resize, padding=PAD), transforms.RandomHorizontalFlip()]
        return datasets.ImageFolder(str(root), transform=transforms.Compose(steps + [transforms.ToTensor()])), \
            "torchvision.datasets.ImageFolder"
    except ImportError:
        return _ImageFolder(root, a.resize, a.augment), "ImageFolder-style (torchvision not installed)"


class _ImageFolder:
    """torchvision's ImageFolder + Resize (+ RandomCrop(padding) + RandomHorizontalFlip) + ToTensor, written out."""

    def __init__(self, root: Path, resize: int, augment: bool) -> None:
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.resize, self.augment = resize, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        from PIL import Image

        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        if img.size != (self.resize, self.resize):
            img = img.resize((self.resize, self.resize), Image.BILINEAR)
        t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).contiguous()
        if self.augment:  # RandomCrop(padding=PAD) then RandomHorizontalFlip on the uint8 image
            t = torch.nn.functional.pad(t, (PAD, PAD, PAD, PAD))
            dy, dx = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
            t = t[:, dy:dy + self.resize, dx:dx + self.resize]
            if torch.rand(1).item() < 0.5:
                t = t.flip(-1)
        return t.float().div(255), label


def run_torch(root: Path, a: argparse.Namespace) -> tuple[float, float, int, str]:
    import torch
    from torch.utils.data import DataLoader

    t0 = time.perf_counter()
    dataset, kind = _torch_dataset(root, a)
    loader = DataLoader(dataset, batch_size=a.batch_size, shuffle=True, num_workers=a.workers)
    t1 = time.perf_counter()
    seen = 0
    it = iter(loader)
    for x, y in it:
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (3, a.resize, a.resize)
        seen += len(x)
    t2 = time.perf_counter()
    del it  # the workers are joined (their CPU time counted)
    return t1 - t0, t2 - t1, seen, kind


def run_tf(root: Path, a: argparse.Namespace) -> tuple[float, float, int]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    t0 = time.perf_counter()
    classes = tf.constant(sorted(d.name for d in os.scandir(root) if d.is_dir()))
    size = a.resize

    def load(path: Any) -> tuple[Any, Any]:
        img = tf.io.decode_png(tf.io.read_file(path), channels=3)
        img = tf.image.resize(img, [size, size])  # bilinear, float32
        if a.augment:
            img = tf.image.pad_to_bounding_box(img, PAD, PAD, size + 2 * PAD, size + 2 * PAD)
            img = tf.image.random_crop(img, [size, size, 3])
            img = tf.image.random_flip_left_right(img)
        img = tf.transpose(img / 255.0, [2, 0, 1])
        label = tf.argmax(tf.cast(tf.equal(classes, tf.strings.split(path, os.sep)[-2]), tf.int32))
        return img, label

    ds = (tf.data.Dataset.list_files(str(root / "*" / "*.png"), shuffle=True)
          .map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(a.batch_size)
          .prefetch(tf.data.AUTOTUNE))
    t1 = time.perf_counter()
    seen = 0
    for x, y in ds:
        assert x.dtype == tf.float32 and tuple(x.shape[1:]) == (3, size, size)
        seen += int(x.shape[0])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, seen


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (worker processes, once joined)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def side_main(a: argparse.Namespace) -> None:
    root = Path(a.root)
    kind = ""
    if a.side == "facade":  # the libraries each side needs, imported before the CPU clock starts
        import unified.data  # noqa: F401
    elif a.side == "torch":
        import torch  # noqa: F401
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow  # noqa: F401
    cpu = _cpu_s()
    if a.side == "facade":
        setup, epoch, seen = run_facade(root, a)
    elif a.side == "torch":
        setup, epoch, seen, kind = run_torch(root, a)
    else:
        setup, epoch, seen = run_tf(root, a)
    cpu = _cpu_s() - cpu
    print(json.dumps({"side": a.side, "setup_s": setup, "epoch_s": epoch, "cpu_s": cpu, "images": seen,
                      "kind": kind}))


# -- the driver ----------------------------------------------------------------------------------------
def measure(side: str, root: Path, workers: int, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--side", side, "--root", str(root), "--workers", str(workers),
           "--resize", str(a.resize), "--batch-size", str(a.batch_size)] + (["--augment"] if a.augment else []) \
        + (["--standardize"] if a.standardize else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} (num_workers={workers}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["images"] != a.n:
        raise SystemExit(f"{side}: {out['images']} images in the epoch, expected {a.n}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="images in the folder")
    p.add_argument("--size", type=int, default=32, help="stored image height and width")
    p.add_argument("--resize", type=int, default=32, help="decoded height and width")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", default="0,2", help="num_workers values, comma separated")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (after one warm-up round)")
    p.add_argument("--augment", action="store_true", help="random crop (padding 4) + horizontal flip on every side")
    p.add_argument("--standardize", action="store_true",
                   help="facade only: data.standardize: true (per-channel statistics streamed over the folder in setup)")
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--root", help="image folder to write (kept) or reuse; default: a temporary folder")
    p.add_argument("--json", help="write the raw measurements here")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        a.workers = int(a.workers)
        return side_main(a)

    sides = [s for s in a.sides.split(",") if s]
    workers = [int(w) for w in a.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="unified-pipeline-") as tmp:
        root = Path(a.root) if a.root else Path(tmp) / "images"
        if count_images(root) != a.n:
            t = time.perf_counter()
            write_folder(root, a.n, a.size)
            print(f"wrote {a.n} PNGs ({a.size}x{a.size} RGB, {CLASSES} classes) to {root} in "
                  f"{time.perf_counter() - t:.1f} s")
        results: dict[str, Any] = {"n": a.n, "size": a.size, "resize": a.resize, "batch_size": a.batch_size,
                                   "augment": a.augment, "standardize": a.standardize, "runs": {}}
        kinds = {}
        for w in workers:
            runs: dict[str, list[dict]] = {s: [] for s in sides}
            for r in range(a.repeats + 1):
                order = sides[r % len(sides):] + sides[:r % len(sides)]
                for s in order:
                    out = measure(s, root, w, a)
                    kinds[s] = out["kind"] or kinds.get(s, "")
                    if r > 0:
                        runs[s].append(out)
                    print(f"  num_workers={w} round {r}{' (warm-up)' if r == 0 else ''} {s:6s} "
                          f"{a.n / out['epoch_s']:8.0f} images/s  (setup {out['setup_s']:.2f} s)", flush=True)
            results["runs"][w] = runs
        report(results, sides, workers, kinds.get("torch", ""))
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))


def report(results: dict[str, Any], sides: list[str], workers: list[int], torch_kind: str) -> None:
    """Per num_workers: each side's median images/s over the epoch (and setup s, CPU ms per 100 images), the
    ratio facade / max(others) of those medians, the median of the per-round ratios (sides measured minutes
    apart share the machine's load), and the same ratio with setup counted (setup + epoch)."""
    n = results["n"]
    rounds = len(next(iter(results["runs"][workers[0]].values())))
    print(f"\n{n} PNGs {results['size']}x{results['size']} -> {results['resize']}x{results['resize']}, batch "
          f"{results['batch_size']}, augment={results['augment']}; one epoch, median of {rounds} rounds: "
          f"images/s (setup s; CPU ms per 100 images, setup + epoch, workers included)")
    if torch_kind:
        print(f"torch side: {torch_kind}")
    compare = "facade" in sides and len(sides) > 1
    head = "   facade / max(others): medians, per-round, with setup" if compare else ""
    print(f"{'num_workers':>11} " + " ".join(f"{s:>24}" for s in sides) + head)
    for w in workers:
        runs = results["runs"][w]
        med = {s: statistics.median(n / r["epoch_s"] for r in runs[s]) for s in sides}
        setup = {s: statistics.median(r["setup_s"] for r in runs[s]) for s in sides}
        cpu = {s: statistics.median(r["cpu_s"] for r in runs[s]) * 1e5 / n for s in sides}
        line = f"{w:>11} " + " ".join(f"{med[s]:>8.0f} ({setup[s]:4.2f}s; {cpu[s]:4.1f}ms)" for s in sides)
        if compare:
            others = [s for s in sides if s != "facade"]
            ratio = med["facade"] / max(med[s] for s in others)
            paired = statistics.median(
                (n / runs["facade"][i]["epoch_s"]) / max(n / runs[s][i]["epoch_s"] for s in others)
                for i in range(rounds))
            total = {s: statistics.median(n / (r["setup_s"] + r["epoch_s"]) for r in runs[s]) for s in sides}
            with_setup = total["facade"] / max(total[s] for s in others)
            line += f"   {ratio:.2f}  {paired:.2f}  {with_setup:.2f}"
        print(line)


if __name__ == "__main__":
    main()
