"""The data interface: sources, the train/val/test split and the one canonical batch order (numpy only).

Every backend sees exactly the same arrays and the same batches (the recipe is in
:mod:`unified.data.dataset`). Nothing here imports a deep-learning framework; scikit-learn and pyarrow
are imported inside the readers that need them.

Modules:
    sources: :data:`SOURCES`, the ``data.source`` scheme -> reader registry, and the readers
        (sklearn, npz, python); numpy-free at import time.
    tables: the csv and parquet readers.
    labels: label normalization, class encoding and decoding, regression targets.
    features: feature-matrix validation and standardization.
    dataset: :class:`Split`, :class:`Dataset` (batch order, ``fetch`` / ``iter_batches``), :func:`split_indices`.
    build: :func:`load_dataset`, :func:`dataset_from_arrays`.
    images: :func:`~unified.data.images.load_image`, the one image decoder (training and serving).
    imagefolder: the ``imagefolder:`` reader (class folders, header scan; nothing decoded up front).
    stores: samples read per batch: memory-mapped arrays, image files.
    augment: seeded train augmentation (random crop with padding, horizontal flip).
    fetch: the job that turns a batch's part of a store into model input (here or in a worker).
    workers: the processes that fetch upcoming batches ahead (``data.num_workers``).

The names below load on first use, so ``import unified.data.sources`` (the scheme list) imports no numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Split", "Dataset", "load_dataset", "dataset_from_arrays", "split_indices", "TASKS", "SOURCES"]

_LAZY = {
    "Split": "unified.data.dataset",
    "Dataset": "unified.data.dataset",
    "split_indices": "unified.data.dataset",
    "TASKS": "unified.data.dataset",
    "load_dataset": "unified.data.build",
    "dataset_from_arrays": "unified.data.build",
    "SOURCES": "unified.data.sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unified.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from unified.data.build import dataset_from_arrays, load_dataset
    from unified.data.dataset import TASKS, Dataset, Split, split_indices
    from unified.data.sources import SOURCES
