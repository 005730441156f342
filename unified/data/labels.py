"""Targets: label normalization and class encoding (classification, binary) and regression targets.

Classes are the sorted distinct labels of all splits together; a label's code is its position there.
Binary targets are float32 0./1., classification targets int64 class indices, regression targets float32.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from unified.data.messages import one_line, short_list
from unified.errors import DataError


def as_label_array(y: Any, *, what: str = "y") -> np.ndarray:
    """``y`` as an array of at least one dimension.

    Raises:
        DataError: ragged input or a scalar.
    """
    try:
        arr = np.asarray(y)
    except ValueError as e:
        raise DataError(f"{what}: cannot make an array ({one_line(e)})", path="data.source") from None
    if arr.ndim == 0:
        raise DataError(f"{what} must be 1-D [n] (or [n, k] for regression), got a scalar", path="data.source")
    return arr


def flatten_labels(y: np.ndarray, task: str, *, what: str = "y") -> np.ndarray:
    """``[n]`` labels (an ``[n, 1]`` column is flattened).

    Raises:
        DataError: more than one target column (only regression allows that).
    """
    if y.ndim == 2 and y.shape[1] == 1:
        return y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; more than one target column is only allowed for "
                        f"task regression (task is {task})", path="data.source")
    return y


def normalize_labels(y: np.ndarray, task: str, *, what: str = "y") -> np.ndarray:
    """Labels as an int64 array (ints / integral floats / bools) or a str array.

    Raises:
        DataError: mixed numbers and strings, NaN/inf, fractional or continuous-looking numeric labels.
    """
    if y.dtype.kind == "O":
        items = y.tolist()
        if all(isinstance(v, str) for v in items):
            y = np.asarray(items, dtype=str)
        elif all(isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)) for v in items):
            y = np.asarray(items, dtype=np.float64)
        else:
            kinds = sorted({type(v).__name__ for v in items})
            raise DataError(f"{what}: labels must be all numbers or all strings, got {', '.join(kinds)}",
                            path="data.source")
    if y.dtype.kind == "S":
        y = y.astype(str)
    kind = y.dtype.kind
    if kind == "U":
        return y
    if kind == "b":
        return y.astype(np.int64)
    if kind in "iu":
        return y.astype(np.int64)
    if kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            raise DataError(f"{what}: {int((~finite).sum())} label(s) are NaN/inf", path="data.source")
        frac = y != np.round(y)
        if frac.any():
            bad = py_scalar(y[frac][0])
            raise DataError(f"{what}: task {task} needs integer or string labels, got {bad!r} "
                            f"(use task: regression for continuous targets)", path="data.source")
        y = y.astype(np.int64)
        distinct = len(np.unique(y))
        if distinct > 20 and distinct > 0.2 * len(y):
            raise DataError(f"{what}: task {task} got {distinct} distinct numeric labels in {len(y)} samples, "
                            f"which looks continuous (use task: regression)", path="task")
        return y
    raise DataError(f"{what}: unsupported label dtype {y.dtype}", path="data.source")


def regression_targets(y: np.ndarray, *, what: str = "y") -> np.ndarray:
    """Regression targets as contiguous float32 ``[n]`` or ``[n, k]``.

    Raises:
        DataError: more than 2 dimensions, non-numeric values or NaN/inf.
    """
    if y.ndim > 2:
        raise DataError(f"{what} must be [n] or [n, k], got shape {y.shape}", path="data.source")
    if y.dtype.kind not in "biuf":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what}: task regression needs numeric targets, got dtype {y.dtype}",
                            path="data.source") from None
    bad = int(np.count_nonzero(~np.isfinite(y)))
    if bad:
        raise DataError(f"{what} holds {bad} NaN/inf value{'s' if bad != 1 else ''}", path="data.source")
    return np.ascontiguousarray(y, dtype=np.float32)


def encode_splits(targets: dict[str, np.ndarray], task: str, where: str = ""
                  ) -> tuple[dict[str, np.ndarray], Optional[list]]:
    """Encode the raw targets of every split together.

    Args:
        targets: split name -> raw targets (already arrays, see :func:`as_label_array`).
        task: classification | binary | regression.
        where: the message prefix naming the source (``"<file>: "`` or ``""``).

    Returns:
        ``(encoded targets per split, classes)``; classes are the sorted distinct labels of all splits as
        JSON-serialisable python values, None for regression.

    Raises:
        DataError: labels that do not fit ``task`` (too few / many classes, mixed types, ...).
    """
    if task == "regression":
        ys = {name: regression_targets(y, what=f"{where}{name} y") for name, y in targets.items()}
        if len({y.shape[1:] for y in ys.values()}) > 1:
            raise DataError(f"{where}splits have different target shapes", path="data.source")
        return ys, None
    labels = {name: normalize_labels(flatten_labels(y, task, what=f"{where}y"), task, what=f"{where}y")
              for name, y in targets.items()}
    try:
        uniq = np.unique(np.concatenate(list(labels.values())))
    except TypeError:
        raise DataError(f"{where}labels mix types that cannot be compared", path="data.source") from None
    classes = [py_scalar(v) for v in uniq.tolist()]
    if task == "classification" and len(classes) < 2:
        raise DataError(f"{where}task classification needs at least 2 classes, got {len(classes)}: "
                        f"{short_list(classes)}", path="data.source")
    if task == "binary" and len(classes) != 2:
        raise DataError(f"{where}task binary needs exactly 2 classes, got {len(classes)}: "
                        f"{short_list(classes)}", path="data.source")
    ys = {}
    for name, lab in labels.items():
        codes = np.searchsorted(uniq, lab).astype(np.int64)
        ys[name] = codes.astype(np.float32) if task == "binary" else codes
    return ys, classes


def class_index(classes: Optional[list]) -> dict:
    """Label key (see :func:`class_key`) -> class code, for :func:`encode_known`."""
    return {class_key(c): i for i, c in enumerate(classes or [])}


def encode_known(y_raw: Any, task: str, classes: Optional[list], index: Optional[dict]) -> np.ndarray:
    """Raw labels/values -> targets encoded like the dataset's, against its known ``classes``.

    Args:
        y_raw: labels (classification, binary) or values (regression).
        task: the dataset's task.
        classes: the dataset's classes (None for regression).
        index: :func:`class_index` of ``classes`` (built here when None).

    Raises:
        DataError: a label that is not one of ``classes`` (named in the message), or non-numeric
            regression targets.
    """
    y = as_label_array(y_raw)
    if task == "regression":
        return regression_targets(y)
    y = flatten_labels(y, task)
    labels = normalize_labels(y, task)
    if index is None:
        index = class_index(classes)
    uniq, inverse = np.unique(labels, return_inverse=True)
    codes = np.empty(len(uniq), dtype=np.int64)
    for j, u in enumerate(uniq.tolist()):
        code = index.get(class_key(u))
        if code is None:
            raise DataError(f"unknown label {u!r}; expected one of: {short_list(classes)}")
        codes[j] = code
    encoded = codes[inverse.reshape(-1)]
    return encoded.astype(np.float32) if task == "binary" else encoded


def decode_indices(indices: Any, classes: Optional[list], task: str) -> list:
    """Class indices (e.g. ``argmax`` of the logits, or 0/1 for binary) -> original labels.

    Raises:
        DataError: a regression task, non-integer or out-of-range indices.
    """
    if classes is None:
        raise DataError(f"decode applies to classification and binary tasks, not {task!r}")
    arr = np.asarray(indices)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError("decode expects integer class indices")
    idx = arr.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(classes)):
        bad = idx[(idx < 0) | (idx >= len(classes))][0]
        raise DataError(f"class index {int(bad)} out of range 0..{len(classes) - 1}")
    return [classes[i] for i in idx.tolist()]


def py_scalar(v: Any) -> Any:
    """numpy scalar -> python int / float / str (JSON-serialisable; integral floats become ints)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def class_key(v: Any) -> Any:
    """A dict key that tells the label ``"1"`` from the label ``1`` (and equates ``1`` with ``1.0``)."""
    v = py_scalar(v)
    return ("s", v) if isinstance(v, str) else ("n", v)
