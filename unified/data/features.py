"""Model inputs: validation into numeric arrays of samples of any shape, and standardization with train statistics.

Canonical layouts: tables ``[N, F]``; sequences ``[N, T, F]`` (float) or ``[N, T]`` (integer token ids);
images ``[N, C, H, W]`` (channels first). Standardization is per feature for tables and sequences (the last
axis) and per channel for images (axis 1 of a sample of rank >= 3), fitted on the train split.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from unified.data.messages import one_line
from unified.errors import DataError


def as_samples(x: Any, *, what: str = "x", path: Optional[str] = None, shape: Optional[tuple[int, ...]] = None,
               token_ids: bool = False) -> np.ndarray:
    """``x`` as an array of samples ``[N, ...]``: float, or int64 token ids when ``token_ids``.

    A 1-D ``x`` is one feature per row. ``shape`` (``data.shape``) views each row as one sample of that
    shape (``[N, 64]`` -> ``[N, 1, 8, 8]``).

    Raises:
        DataError: ragged or non-numeric values, a ``shape`` that does not fit the rows, or token ids that
            are not whole numbers >= 0; worded with ``what``.
    """
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged lists
        raise DataError(f"{what}: cannot make an array ({one_line(e)})", path=path) from None
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what} must be numeric, got dtype {arr.dtype}", path=path) from None
    if arr.ndim == 0:
        raise DataError(f"{what} must hold one sample per row, got a scalar", path=path)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if shape is not None:
        check_view(shape, tuple(arr.shape[1:]), what)
        arr = arr.reshape(arr.shape[0], *shape)
    if token_ids:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
                raise DataError(f"{what}: token ids (model.vocab_size is set) must be whole numbers", path=path)
        if arr.size and arr.min() < 0:
            raise DataError(f"{what}: token ids must be >= 0, got {arr.min()}", path=path)
        arr = arr.astype(np.int64)
    return arr


def check_view(shape: tuple[int, ...], row_shape: tuple[int, ...], what: str = "x") -> None:
    """Raise (a DataError at ``data.shape``) unless ``shape`` holds as many values as a row of ``row_shape``."""
    per_row = int(np.prod(row_shape))
    if per_row != int(np.prod(shape)):
        raise DataError(f"{what}: {list(shape)} holds {int(np.prod(shape))} values per sample, but "
                        f"each row has {per_row} (rows shaped {tuple(row_shape)})", path="data.shape")


def channel_axis(rank: int) -> int:
    """The axis standardized separately in a batch of rank ``rank``: 1 (channels) for images, else the last."""
    return 1 if rank >= 4 else rank - 1


class Moments:
    """Mean and population variance per channel (images) or feature, streamed over chunks of samples.

    The first chunk's statistics are numpy's ``mean`` / ``var`` in float64; each further chunk is merged
    with Chan et al.'s pairwise update, so a split read in one chunk gives exactly what
    ``x.mean()`` / ``x.std()`` of the whole split give, and a larger one is never loaded whole.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Optional[np.ndarray] = None
        self.var: Optional[np.ndarray] = None
        self.rank = 0

    @staticmethod
    def of(chunk: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """``(count per channel, mean, var)`` of one chunk ``[n, ...]`` (kept dims, float64)."""
        x64 = chunk.astype(np.float64)
        keep = channel_axis(x64.ndim)
        axes = tuple(a for a in range(x64.ndim) if a != keep)
        count = int(np.prod([x64.shape[a] for a in axes]))
        return count, x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)

    def update(self, chunk: np.ndarray) -> "Moments":
        """Merge the statistics of one more chunk of samples."""
        if len(chunk):
            self.rank = chunk.ndim
            self.merge(*self.of(chunk))
        return self

    def merge(self, n: int, mean: np.ndarray, var: np.ndarray) -> "Moments":
        """Merge a chunk's ``(count, mean, var)`` (as :meth:`of` returns them)."""
        if n == 0:
            return self
        self.rank = self.rank or mean.ndim
        if self.n == 0 or self.mean is None or self.var is None:
            self.n, self.mean, self.var = n, mean, var
            return self
        total = self.n + n
        delta = mean - self.mean
        m2 = self.var * self.n + var * n + delta * delta * (self.n * n / total)
        self.mean = self.mean + delta * (n / total)
        self.var = m2 / total
        self.n = total
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Float32 ``(mean, std)`` as :func:`fit_standardize` returns them."""
        if self.mean is None or self.var is None:
            raise ValueError("no samples to standardize with")
        mean, std = self.mean[0], np.sqrt(self.var)[0]
        if channel_axis(self.rank) == self.rank - 1:  # per feature: a flat [F] vector, as tables have always stored it
            mean, std = mean.reshape(-1), std.reshape(-1)
        std = std.copy()
        std[~(std > 0)] = 1.0
        return mean.astype(np.float32), std.astype(np.float32)


def fit_standardize(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 ``(mean, std)`` of the train split per feature (tables, sequences: ``[F]``) or per channel
    (images: ``[C, 1, 1]``), computed in float64; a zero std becomes 1. They broadcast over one sample."""
    return Moments().update(x_train).result()


def apply_standardize(x: np.ndarray, mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> np.ndarray:
    """``(x - mean) / std`` in float64, returned as contiguous float32 (just float32 without statistics)."""
    if mean is None or std is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    out = (x.astype(np.float64) - mean.astype(np.float64)) / std.astype(np.float64)
    return np.ascontiguousarray(out, dtype=np.float32)
