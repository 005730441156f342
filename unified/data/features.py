"""Feature matrices: validation into a 2-D numeric array, and standardization with train statistics."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from unified.data.messages import one_line
from unified.errors import DataError


def as_float_matrix(x: Any, *, what: str = "x", path: Optional[str] = None, allow_1d: bool = True
                    ) -> np.ndarray:
    """``x`` as a 2-D numeric array (a 1-D ``x`` is one feature when ``allow_1d``).

    Raises:
        DataError: ragged rows, non-numeric values or the wrong number of dimensions, worded with ``what``.
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
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D [n, features], got shape {arr.shape}", path=path)
    return arr


def fit_standardize(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature float32 ``(mean, std)`` of the train split (computed in float64; a zero std becomes 1)."""
    x64 = x_train.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    std[~(std > 0)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def apply_standardize(x: np.ndarray, mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> np.ndarray:
    """``(x - mean) / std`` in float64, returned as contiguous float32 (just float32 without statistics)."""
    if mean is None or std is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    out = (x.astype(np.float64) - mean.astype(np.float64)) / std.astype(np.float64)
    return np.ascontiguousarray(out, dtype=np.float32)
