"""Native data objects the facade accepts besides numpy arrays: ``tf.data`` datasets and batch loaders.

Framework-free: objects are recognised by their type's module, so nothing here imports TensorFlow or torch.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from unified.errors import DataError


def is_tf_dataset(obj: Any) -> bool:
    """True for a ``tf.data.Dataset`` (checked without importing TensorFlow)."""
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "as_numpy_iterator")


def tf_dataset_arrays(ds: Any, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """All ``(x, y)`` elements of a (batched or unbatched) ``tf.data.Dataset`` as two numpy arrays.

    The facade re-batches them in its canonical order (``data.batch_size``, ``data.shuffle``), so the
    dataset's own batching and shuffling only decide which samples there are.
    """
    xs, ys = [], []
    for item in ds.as_numpy_iterator():
        if isinstance(item, dict):
            item = _pair_from_dict(item, what)
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{what}: a tf.data element must be (x, y), got {type(item).__name__}")
        xs.append(np.asarray(item[0]))
        ys.append(np.asarray(item[1]))
    if not xs:
        raise DataError(f"{what}: the tf.data dataset is empty")
    batched = xs[0].ndim >= 2 or (xs[0].ndim == 1 and ys[0].ndim == 1 and len(xs[0]) == len(ys[0]))
    if batched:
        return np.concatenate(xs), np.concatenate(ys)
    return np.stack(xs), np.stack(ys)


def _pair_from_dict(item: dict, what: str) -> tuple[Any, Any]:
    for xk, yk in (("x", "y"), ("input", "target"), ("inputs", "targets"), ("features", "label")):
        if xk in item and yk in item:
            return item[xk], item[yk]
    raise DataError(f"{what}: a tf.data element dict needs x/y keys, got {sorted(item)}")


def arrays_of(obj: Any, what: str = "data") -> Any:
    """``obj`` with a tf.data dataset turned into an ``(x, y)`` pair; anything else unchanged."""
    return tf_dataset_arrays(obj, what) if is_tf_dataset(obj) else obj


def is_batch_loader(obj: Any) -> bool:
    """True for an iterable of batches that is not an array, a pair or a dict (a torch DataLoader, ...)."""
    if isinstance(obj, (tuple, list, dict, str, bytes)) or hasattr(obj, "__array__"):
        return False
    return hasattr(obj, "__iter__")


def batch_inputs(batch: Any) -> Any:
    """The model inputs of one loader batch: ``x`` of ``(x, y)`` / ``{"x": ...}``, or the batch itself."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs", "features"):
            if key in batch:
                return batch[key]
    return batch


def loader_inputs(loader: Any) -> Optional[np.ndarray]:
    """Every batch's inputs of a loader, concatenated into one float32 array (None when empty)."""
    parts = []
    for batch in loader:
        x = batch_inputs(batch)
        if hasattr(x, "detach"):
            x = x.detach().cpu()
        parts.append(np.asarray(x, dtype=np.float32))
    return np.concatenate(parts) if parts else None
