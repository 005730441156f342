"""Write a small image folder (one subfolder per class, PNG files) for ``examples/imagefolder.yaml``, offline.

scikit-learn's bundled 8x8 digits, upscaled to ``--size`` pixels, drawn in a random colour on a random
dark background with a little noise, as RGB PNGs::

    python examples/make_image_folder.py                  # examples/data/digits_png/<0..9>/<n>.png
    python examples/make_image_folder.py --out /tmp/pngs --per-class 40 --size 28
    unified run examples/imagefolder.yaml

The layout is the one torchvision's ImageFolder, Keras's image_dataset_from_directory and HF datasets'
"imagefolder" read: ``<out>/<class>/<file>.png``. The same ``--seed`` writes the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "digits_png"


def make_image_folder(out: Path, per_class: int = 60, size: int = 16, seed: int = 0) -> int:
    """Write ``per_class`` PNGs for each of the 10 digit classes under ``out``; returns the number written.

    Args:
        out: the folder to write (created; files of an earlier run with the same names are overwritten).
        per_class: images per class (at most the ~178 digits sklearn bundles per class).
        size: image height and width in pixels.
        seed: the numpy seed for colours and noise.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    if out.parent.name == "data" and not (out.parent / ".gitignore").exists():
        (out.parent / ".gitignore").write_text("*\n")  # generated data stays out of git
    written = 0
    for label in range(10):
        folder = out / str(label)
        folder.mkdir(exist_ok=True)
        picks = np.flatnonzero(digits.target == label)[:per_class]
        for i, k in enumerate(picks):
            ink = digits.images[k] / 16.0  # [8, 8] in [0, 1]
            big = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                             dtype=np.float64) / 255.0
            fg = rng.uniform(0.5, 1.0, size=3)
            bg = rng.uniform(0.0, 0.3, size=3)
            rgb = bg * (1 - big[..., None]) + fg * big[..., None] + rng.normal(0, 0.04, size=(size, size, 3))
            Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), "RGB").save(folder / f"{i:04d}.png")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--per-class", type=int, default=60, help="images per class (default 60)")
    parser.add_argument("--size", type=int, default=16, help="image height and width (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = make_image_folder(args.out, args.per_class, args.size, args.seed)
    print(f"wrote {n} PNG files in 10 class folders under {args.out}")


if __name__ == "__main__":
    main()
