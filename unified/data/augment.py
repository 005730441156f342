"""Seeded image augmentation of the train split: random crop with zero padding, horizontal flip (numpy only).

The parameters of one epoch come from ONE generator, drawn for every train sample at once and indexed by
the sample's index in the train split, so a sample is augmented the same way whatever the batch size, the
number of worker processes or the DDP rank that fetches it::

    rng  = default_rng([seed, 3, epoch])                   # 0-based epoch
    flip = rng.random(n_train) < 0.5                        # when hflip
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, n_train))  # when crop_padding p > 0 (drawn after flip)

A sample ``[C, H, W]`` is zero-padded by ``p`` on each side of H and W, cropped back to ``H, W`` at
``(dy, dx)``, then mirrored left-right when ``flip`` (torchvision's RandomCrop(padding) then
RandomHorizontalFlip). Augmentation runs on the raw samples (pixels in ``[0, 1]``), before standardization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["Augment", "AugmentParams", "AUGMENT_STREAM"]

AUGMENT_STREAM = 3  # the seed sequence's second element: 0 split, 1 weights, 2 order, 3 augmentation


@dataclass(frozen=True)
class AugmentParams:
    """The drawn parameters for some samples (all of an epoch, or one batch's rows of them)."""

    flip: Optional[np.ndarray]  # bool [n]
    offsets: Optional[np.ndarray]  # int64 [n, 2]: (dy, dx) into the padded sample

    def take(self, idx: Any) -> "AugmentParams":
        idx = np.asarray(idx, dtype=np.int64)
        return AugmentParams(None if self.flip is None else self.flip[idx],
                             None if self.offsets is None else self.offsets[idx])


@dataclass(frozen=True)
class Augment:
    """``data.augment``: ``hflip`` (p = 0.5) and ``crop_padding`` (pixels)."""

    hflip: bool = False
    crop_padding: int = 0

    @property
    def active(self) -> bool:
        return bool(self.hflip) or self.crop_padding > 0

    def params(self, seed: int, epoch: int, n: int) -> AugmentParams:
        """Every train sample's parameters for 0-based ``epoch`` (see the module docstring)."""
        rng = np.random.default_rng([int(seed), AUGMENT_STREAM, int(epoch)])
        flip = rng.random(n) < 0.5 if self.hflip else None
        offsets = None
        if self.crop_padding > 0:
            offsets = rng.integers(0, 2 * self.crop_padding + 1, size=(2, n)).T.astype(np.int64)
        return AugmentParams(flip, offsets)

    def apply(self, x: np.ndarray, params: AugmentParams) -> np.ndarray:
        """Augment a raw batch ``[b, C, H, W]`` with its samples' ``params`` (a new array)."""
        out = x
        p = int(self.crop_padding)
        if params.offsets is not None and p > 0:
            h, w = x.shape[-2:]
            padded = np.zeros((*x.shape[:-2], h + 2 * p, w + 2 * p), dtype=x.dtype)
            padded[..., p:p + h, p:p + w] = x
            out = np.empty_like(x)
            for i, (dy, dx) in enumerate(params.offsets.tolist()):
                out[i] = padded[i, ..., dy:dy + h, dx:dx + w]
        if params.flip is not None and params.flip.any():
            if out is x:
                out = x.copy()
            out[params.flip] = out[params.flip][..., ::-1]
        return out
