"""The jobs that turn part of a store into model input, the same in the main process and in the workers.

Each job is self-contained (a batch's part of a :class:`~unified.data.stores.SampleStore` and the small
arrays it needs), so :mod:`unified.data.workers` can run it anywhere and the result does not depend on
where it ran: ``data.num_workers: 2`` gives the very bytes ``num_workers: 0`` gives.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from unified.data.augment import Augment, AugmentParams
from unified.data.features import Moments, apply_standardize
from unified.data.stores import SampleStore

__all__ = ["fetch_batch", "scan_chunk"]


def fetch_batch(part: SampleStore, augment: Optional[Augment], params: Optional[AugmentParams],
                mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> np.ndarray:
    """Every sample of ``part``, read, augmented (when ``augment``) and standardized: the model input.

    Returns:
        Contiguous float32 ``[len(part), *sample_shape]`` (int64 for token ids).
    """
    x = part.take(np.arange(len(part), dtype=np.int64))
    if part.token_ids:
        return np.ascontiguousarray(x, dtype=np.int64)
    if augment is not None and params is not None:
        x = augment.apply(x, params)
    return apply_standardize(x, mean, std)


def scan_chunk(part: SampleStore, moments: bool) -> tuple[int, int, int, Optional[tuple]]:
    """One pass over a chunk: ``(NaN/inf count, fractional count, negative count, moments or None)``.

    The fractional and negative counts concern token ids (whole numbers >= 0); ``moments`` (the chunk's
    ``(count, mean, var)``, see :class:`~unified.data.features.Moments`) is computed when asked.
    """
    x = part.take(np.arange(len(part), dtype=np.int64))
    bad = int(np.count_nonzero(~np.isfinite(x))) if part.checks_finite else 0
    frac = neg = 0
    if part.token_ids:
        if x.dtype.kind == "f":
            frac = int(np.count_nonzero(x != np.round(x)))
        neg = int(np.count_nonzero(x < 0))
    stats = Moments.of(x) if moments and not bad else None
    part.release()
    return bad, frac, neg, stats
