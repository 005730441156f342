"""The loaded data and its one canonical order: :class:`Split`, :class:`Dataset`, :func:`split_indices`.

Every backend sees exactly the same arrays and the same batches: the split and the per-epoch order come
from ``spec.seed`` through ``numpy.random.default_rng``, never from a framework RNG or the global one.

* split:  ``perm = default_rng([seed, 0]).permutation(n)``; ``test = perm[:n_test]``,
  ``val = perm[n_test:n_test + n_val]``, ``train = rest``; each index set sorted ascending.
* epoch order (0-based ``epoch``): ``default_rng([seed, 2, epoch]).permutation(n_train)`` when shuffling,
  else ``arange(n_train)``; cut into consecutive ``batch_size`` chunks, the last partial one kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from unified.data.features import apply_standardize, as_samples
from unified.data.labels import class_index, decode_indices, encode_known
from unified.errors import DataError

__all__ = ["TASKS", "SPLITS", "Split", "Dataset", "split_indices"]

TASKS = ("classification", "binary", "regression")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split of the data.

    Attributes:
        x: float32 ``[n, in_features]``, already standardized when the spec asks for it.
        y: classification: int64 ``[n]`` class indices; binary: float32 ``[n]`` of 0./1.;
            regression: float32 ``[n]`` or ``[n, k]``.
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    """The loaded, encoded, split and (optionally) standardized data plus the canonical batch order."""

    train: Split
    val: Optional[Split]
    test: Optional[Split]
    task: str
    classes: Optional[list]
    feature_names: list[str]
    mean: Optional[np.ndarray]
    std: Optional[np.ndarray]
    batch_size: int
    shuffle: bool
    seed: int
    view_shape: Optional[tuple[int, ...]] = None  # data.shape: raw rows are viewed as samples of this shape
    _class_index: Optional[dict] = field(default=None, init=False, repr=False, compare=False)

    # -- shapes --------------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape: ``(F,)`` (tables), ``(T, F)`` / ``(T,)`` (sequences), ``(C, H, W)`` (images)."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def input_dtype(self) -> str:
        """``"float32"``, or ``"int64"`` for token ids."""
        return "int64" if self.train.x.dtype == np.int64 else "float32"

    @property
    def in_features(self) -> int:
        """Number of input values per sample (the columns of a table)."""
        return int(np.prod(self.sample_shape))

    @property
    def out_features(self) -> int:
        """Model output width: C (classification), 1 (binary) or k (regression; 1 when y is 1-D)."""
        if self.task == "classification":
            return len(self.classes or [])
        if self.task == "binary":
            return 1
        return 1 if self.train.y.ndim == 1 else int(self.train.y.shape[1])

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes (2 for binary), None for regression."""
        return None if self.classes is None else len(self.classes)

    def split(self, name: str) -> Optional[Split]:
        """The split called ``name`` (train | val | test), None when that split is absent."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    # -- batch order ---------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        """Batches per epoch: ``ceil(n_train / batch_size)`` (the last partial batch is kept)."""
        return int(math.ceil(len(self.train) / self.batch_size))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The train indices of 0-based ``epoch`` in canonical order (int64)."""
        n = len(self.train)
        if self.shuffle:
            return np.random.default_rng([int(self.seed), 2, int(epoch)]).permutation(n).astype(np.int64)
        return np.arange(n, dtype=np.int64)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The train batches of 0-based ``epoch``: a pure function of ``(seed, epoch)``.

        Returns:
            Consecutive int64 index arrays of ``batch_size`` into ``train`` (the last may be smaller).
        """
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        order = self.epoch_order(epoch)
        bs = self.batch_size
        return [order[i:i + bs] for i in range(0, len(order), bs)]

    def eval_batches(self, split: str = "val") -> list[np.ndarray]:
        """Sequential int64 index arrays of ``batch_size`` over ``split`` ([] when it is absent)."""
        part = self.split(split)
        if part is None:
            return []
        n = len(part)
        idx = np.arange(n, dtype=np.int64)
        return [idx[i:i + self.batch_size] for i in range(0, n, self.batch_size)]

    # -- conversions ---------------------------------------------------------------------------------
    def transform(self, x_raw: Any) -> np.ndarray:
        """Raw features -> float32 model input (standardized with the train statistics if set).

        Raises:
            DataError: ``x_raw`` is not 2-D numeric or has the wrong number of features.
        """
        x = np.asarray(x_raw) if not isinstance(x_raw, np.ndarray) else x_raw
        token_ids = self.input_dtype == "int64"
        if self.view_shape is not None and x.ndim >= 1 and x.shape[1:] != self.sample_shape:
            x = as_samples(x, what="x", shape=self.view_shape, token_ids=token_ids)  # raw rows, as the source gave
        else:
            if x.ndim == 1 and self.sample_shape != (1,):
                raise DataError(f"expected samples shaped {list(self.sample_shape)} (a batch: [n, "
                                f"{', '.join(map(str, self.sample_shape))}]), got shape {list(x.shape)}")
            x = as_samples(x, what="x", token_ids=token_ids)
        if x.shape[1:] != self.sample_shape:
            if len(self.sample_shape) == 1:
                raise DataError(f"expected {self.in_features} features per row, got {x.shape[1]} (shape {x.shape})")
            raise DataError(f"expected samples shaped {list(self.sample_shape)}, got {list(x.shape[1:])} "
                            f"(batch shape {list(x.shape)})")
        if token_ids:
            return np.ascontiguousarray(x)
        return apply_standardize(x, self.mean, self.std)

    def encode_targets(self, y_raw: Any) -> np.ndarray:
        """Raw labels/values -> encoded targets like ``Split.y``.

        Raises:
            DataError: a label that is not one of ``classes`` (named in the message), or non-numeric
                regression targets.
        """
        if self.task != "regression" and self._class_index is None:
            self._class_index = class_index(self.classes)
        return encode_known(y_raw, self.task, self.classes, self._class_index)

    def decode(self, indices: Any) -> list:
        """Class indices (e.g. ``argmax`` of the logits, or 0/1 for binary) -> original labels."""
        return decode_indices(indices, self.classes, self.task)


def split_indices(n: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """The canonical split of ``n`` samples: sorted int64 index arrays for train (+ val, test when > 0)."""
    perm = np.random.default_rng([int(seed), 0]).permutation(n).astype(np.int64)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    out = {"train": np.sort(perm[n_test + n_val:])}
    if test_fraction > 0:
        out["test"] = np.sort(perm[:n_test])
    if val_fraction > 0:
        out["val"] = np.sort(perm[n_test:n_test + n_val])
    return out
