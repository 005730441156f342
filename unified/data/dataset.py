"""The loaded data and its one canonical order: :class:`Split`, :class:`Dataset`, :func:`split_indices`.

Every backend sees exactly the same arrays and the same batches: the split and the per-epoch order come
from ``spec.seed`` through ``numpy.random.default_rng``, never from a framework RNG or the global one.

* split:  ``perm = default_rng([seed, 0]).permutation(n)``; ``test = perm[:n_test]``,
  ``val = perm[n_test:n_test + n_val]``, ``train = rest``; each index set sorted ascending.
* epoch order (0-based ``epoch``): ``default_rng([seed, 2, epoch]).permutation(n_train)`` when shuffling,
  else ``arange(n_train)``; cut into consecutive ``batch_size`` chunks, the last partial one kept.
* augmentation (train split, images): ``default_rng([seed, 3, epoch])`` (:mod:`unified.data.augment`).

A split's ``x`` is an in-RAM array of model inputs (adapters index it directly: the fast path), or a
:class:`~unified.data.stores.SampleStore` (memory map, image files, or a train split that is augmented)
whose batches :meth:`Dataset.fetch` / :meth:`Dataset.iter_batches` read, augment and standardize, in
``data.num_workers`` processes when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from unified.data.augment import Augment, AugmentParams
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
        x: float32 ``[n, *sample_shape]`` model inputs (int64 token ids) in RAM, already standardized when
            the spec asks for it; or a :class:`~unified.data.stores.SampleStore` of raw samples, read per
            batch by :meth:`Dataset.fetch` (see :attr:`in_memory`).
        y: classification: int64 ``[n]`` class indices; binary: float32 ``[n]`` of 0./1.;
            regression: float32 ``[n]`` or ``[n, k]``. Always in RAM.
    """

    x: Any
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def in_memory(self) -> bool:
        """Whether ``x`` is an in-RAM array of model inputs that may be indexed directly (the fast path);
        otherwise batches come from :meth:`Dataset.fetch`."""
        return isinstance(self.x, np.ndarray) and not isinstance(self.x, np.memmap)


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
    augment: Optional[Augment] = None  # data.augment: applied to the train split when it is fetched
    num_workers: int = 0  # data.num_workers: processes that fetch upcoming batches ahead
    image: Optional[dict] = None  # imagefolder: {"size": [H, W], "channels": C}, how an image file is decoded
    workers: Any = field(default=None, repr=False, compare=False)  # a unified.data.workers.WorkerPool
    _class_index: Optional[dict] = field(default=None, init=False, repr=False, compare=False)
    _augment_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    # -- fetching batches ----------------------------------------------------------------------------
    def fetch(self, split: str, idx: Any, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The model input and targets of samples ``idx`` of ``split`` in 0-based ``epoch``.

        Reads the samples (a memory map's rows, decoded image files), augments them on the train split
        (``data.augment``, parameters of ``epoch``: :mod:`unified.data.augment`) and standardizes them;
        for an in-memory split it is ``(x[idx], y[idx])``. The result depends only on ``(split, idx,
        epoch)`` and the seed: not on the batch size, the worker count or the process asking.

        Returns:
            ``(x, y)``: contiguous float32 ``[len(idx), *sample_shape]`` (int64 token ids) and the targets.
        """
        from unified.data.fetch import fetch_batch

        part = self._part(split)
        idx = np.asarray(idx, dtype=np.int64)
        if part.in_memory:
            return part.x[idx], part.y[idx]
        return fetch_batch(*self._job(split, part, idx, epoch)), part.y[idx]

    def iter_batches(self, split: str, batches: Iterable[Any], epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`fetch` of each index array in ``batches``, in order; with ``data.num_workers`` > 0 the
        worker processes fetch the next batches ahead (the same arrays as fetched here).

        Closing the iterator early (a run stopped mid-epoch) drops the batches fetched ahead.
        """
        part = self._part(split)
        if part.in_memory:
            for idx in batches:
                yield part.x[idx], part.y[idx]
            return
        batches = [np.asarray(b, dtype=np.int64) for b in batches]
        pool = self._pool()
        if pool is None:
            for idx in batches:
                yield self.fetch(split, idx, epoch)
            return
        from unified.data.fetch import fetch_batch

        jobs = (self._job(split, part, idx, epoch) for idx in batches)
        largest = max((len(b) for b in batches), default=0) * int(np.prod(part.x.shape[1:])) * 8
        results = pool.imap(fetch_batch, jobs, slot_bytes=largest)
        try:
            for idx, x in zip(batches, results):
                yield x, part.y[idx]
        finally:
            results.close()

    def close(self) -> None:
        """Stop the worker processes (``data.num_workers``); they start again when needed."""
        if self.workers is not None:
            self.workers.close()

    def augment_params(self, epoch: int) -> Optional[AugmentParams]:
        """Every train sample's augmentation parameters of 0-based ``epoch`` (None without augmentation)."""
        if self.augment is None or not self.augment.active:
            return None
        key = int(epoch)
        params = self._augment_cache.get(key)
        if params is None:
            if len(self._augment_cache) >= 2:
                self._augment_cache.pop(next(iter(self._augment_cache)))
            params = self._augment_cache[key] = self.augment.params(self.seed, key, len(self.train))
        return params

    def _part(self, split: str) -> Split:
        part = self.split(split)
        if part is None:
            raise ValueError(f"the dataset has no {split} split")
        return part

    def _job(self, split: str, part: Split, idx: np.ndarray, epoch: int) -> tuple:
        params = self.augment_params(epoch) if split == "train" else None
        return (part.x.subset(idx), self.augment if params is not None else None,
                None if params is None else params.take(idx), self.mean, self.std)

    def _pool(self) -> Any:
        if self.num_workers <= 0:
            return None
        if self.workers is None:
            from unified.data.workers import WorkerPool

            self.workers = WorkerPool(self.num_workers)
        return self.workers

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
