"""The data interface: sources, the train/val/test split and the one canonical batch order (numpy only).

Every backend sees exactly the same arrays and the same batches: the split and the per-epoch order come
from ``spec.seed`` through ``numpy.random.default_rng``, never from a framework RNG or the global one.

* split:  ``perm = default_rng([seed, 0]).permutation(n)``; ``test = perm[:n_test]``,
  ``val = perm[n_test:n_test + n_val]``, ``train = rest``; each index set sorted ascending.
* epoch order (0-based ``epoch``): ``default_rng([seed, 2, epoch]).permutation(n_train)`` when shuffling,
  else ``arange(n_train)``; cut into consecutive ``batch_size`` chunks, the last partial one kept.

Nothing here imports a deep-learning framework; scikit-learn and pyarrow are imported lazily inside the
loaders that need them.
"""

from __future__ import annotations

import csv
import difflib
import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from unified.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from unified.spec import Spec

__all__ = ["Split", "Dataset", "load_dataset", "dataset_from_arrays", "split_indices", "TASKS"]

TASKS = ("classification", "binary", "regression")
_SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------------
# containers
# ----------------------------------------------------------------------------------------------------------

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
    _class_index: Optional[dict] = field(default=None, init=False, repr=False, compare=False)

    # -- shapes --------------------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """Number of input features (columns of ``x``)."""
        return int(self.train.x.shape[1])

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
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of: {', '.join(_SPLITS)}")
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
        x = _as_float_matrix(x_raw, what="x", allow_1d=False)
        if x.shape[1] != self.in_features:
            raise DataError(f"expected {self.in_features} features per row, got {x.shape[1]} (shape {x.shape})")
        return _apply_standardize(x, self.mean, self.std)

    def encode_targets(self, y_raw: Any) -> np.ndarray:
        """Raw labels/values -> encoded targets like ``Split.y``.

        Raises:
            DataError: a label that is not one of ``classes`` (named in the message), or non-numeric
                regression targets.
        """
        y = _as_label_array(y_raw)
        if self.task == "regression":
            return _regression_targets(y)
        y = _flatten_labels(y, self.task)
        labels = _normalize_labels(y, self.task)
        if self._class_index is None:
            self._class_index = {_key(c): i for i, c in enumerate(self.classes or [])}
        uniq, inverse = np.unique(labels, return_inverse=True)
        codes = np.empty(len(uniq), dtype=np.int64)
        for j, u in enumerate(uniq.tolist()):
            code = self._class_index.get(_key(u))
            if code is None:
                raise DataError(f"unknown label {u!r}; expected one of: {_short_list(self.classes)}")
            codes[j] = code
        encoded = codes[inverse.reshape(-1)]
        return encoded.astype(np.float32) if self.task == "binary" else encoded

    def decode(self, indices: Any) -> list:
        """Class indices (e.g. ``argmax`` of the logits, or 0/1 for binary) -> original labels."""
        if self.classes is None:
            raise DataError(f"decode applies to classification and binary tasks, not {self.task!r}")
        arr = np.asarray(indices)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        arr = arr.reshape(-1)
        if arr.size and arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise DataError("decode expects integer class indices")
        idx = arr.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.classes)):
            bad = idx[(idx < 0) | (idx >= len(self.classes))][0]
            raise DataError(f"class index {int(bad)} out of range 0..{len(self.classes) - 1}")
        return [self.classes[i] for i in idx.tolist()]


# ----------------------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------------------

def load_dataset(spec: "Spec", base_dir: Optional[str] = None) -> Dataset:
    """Load, encode, split and standardize the data named by ``spec.data.source``.

    Args:
        spec: the experiment spec.
        base_dir: the spec file's folder; relative paths not found in the working directory are
            looked up there, and it is put on ``sys.path`` for ``python:`` sources.

    Raises:
        DataError: a one-line message naming the field (``data.source`` ...), the file and the problem.
    """
    d = spec.data
    scheme = d.scheme
    if d.source is None:
        raise DataError("required field is missing (e.g. 'sklearn:digits'); only UnifiedTrainer.fit(data=...) "
                        "runs without it", path="data.source")
    if scheme == "sklearn":
        raw = _load_sklearn(d.location)
    elif scheme == "csv":
        raw = _load_csv(_resolve_path(d.location, base_dir), d.target, d.features)
    elif scheme == "npz":
        raw = _load_npz(_resolve_path(d.location, base_dir), d.x_key, d.y_key)
    elif scheme == "parquet":
        raw = _load_parquet(_resolve_path(d.location, base_dir), d.target, d.features)
    elif scheme == "python":
        raw = _load_python(d.location, d.kwargs, base_dir)
    else:  # pragma: no cover - the spec validator rejects other schemes
        raise DataError(f"unknown data scheme {scheme!r}", path="data.source")
    return _build(spec, raw)


def dataset_from_arrays(x: Any, y: Any, spec: "Spec", *, val: Any = None, test: Any = None) -> Dataset:
    """A Dataset from the user's own arrays, with the spec's encoding, split and standardize rules.

    Args:
        x: features ``[n, f]`` (lists OK; 1-D is taken as one feature).
        y: labels / values ``[n]`` (``[n, k]`` for multi-output regression).
        spec: the experiment spec (task, seed, fractions, batch size, standardize).
        val: an ``(x, y)`` pair used as the validation split instead of splitting one off.
        test: an ``(x, y)`` pair used as the test split instead of splitting one off.

    Splits not given are split off ``x, y`` with ``spec.data`` fractions exactly like ``load_dataset``.
    """
    raw = _Raw(x=x, y=y, feature_names=None, val=_pair(val, "val"), test=_pair(test, "test"), where="")
    return _build(spec, raw)


# ----------------------------------------------------------------------------------------------------------
# building: validation, encoding, split, standardize
# ----------------------------------------------------------------------------------------------------------

@dataclass
class _Raw:
    x: Any
    y: Any
    feature_names: Optional[list[str]]
    val: Optional[tuple[Any, Any]] = None
    test: Optional[tuple[Any, Any]] = None
    where: str = ""


def _pair(value: Any, name: str) -> Optional[tuple[Any, Any]]:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) >= {"x", "y"}:
        return value["x"], value["y"]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{name}: expected an (x, y) pair, got {type(value).__name__}", path="data.source")


def _build(spec: "Spec", raw: _Raw) -> Dataset:
    d = spec.data
    task = spec.task
    where = f"{raw.where}: " if raw.where else ""

    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in (("train", (raw.x, raw.y)), ("val", raw.val), ("test", raw.test)):
        if pair is None:
            continue
        label = "" if name == "train" and raw.val is None and raw.test is None else f"{name} "
        x = _as_float_matrix(pair[0], what=f"{where}{label}x", path="data.source")
        y = _as_label_array(pair[1], what=f"{where}{label}y")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{where}{label}x has {x.shape[0]} rows but y has {y.shape[0]}", path="data.source")
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DataError(f"{where}{label}x holds {bad} NaN/inf value{'s' if bad != 1 else ''}",
                            path="data.source")
        parts[name] = (x, y)

    x_all, y_all = parts["train"]
    widths = {name: p[0].shape[1] for name, p in parts.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{where}splits have different feature counts: {widths}", path="data.source")

    # -- targets ---------------------------------------------------------------------------------
    if task == "regression":
        ys = {name: _regression_targets(p[1], what=f"{where}{name} y") for name, p in parts.items()}
        ndims = {y.shape[1:] for y in ys.values()}
        if len(ndims) > 1:
            raise DataError(f"{where}splits have different target shapes", path="data.source")
        classes = None
    else:
        labels = {name: _normalize_labels(_flatten_labels(p[1], task, what=f"{where}y"), task, what=f"{where}y")
                  for name, p in parts.items()}
        try:
            uniq = np.unique(np.concatenate(list(labels.values())))
        except TypeError:
            raise DataError(f"{where}labels mix types that cannot be compared", path="data.source") from None
        classes = [_py(v) for v in uniq.tolist()]
        if task == "classification" and len(classes) < 2:
            raise DataError(f"{where}task classification needs at least 2 classes, got {len(classes)}: "
                            f"{_short_list(classes)}", path="data.source")
        if task == "binary" and len(classes) != 2:
            raise DataError(f"{where}task binary needs exactly 2 classes, got {len(classes)}: "
                            f"{_short_list(classes)}", path="data.source")
        ys = {}
        for name, lab in labels.items():
            codes = np.searchsorted(uniq, lab).astype(np.int64)
            ys[name] = codes.astype(np.float32) if task == "binary" else codes

    # -- split -----------------------------------------------------------------------------------
    xs = {name: p[0] for name, p in parts.items()}
    n = x_all.shape[0]
    val_frac = 0.0 if raw.val is not None else d.val_fraction
    test_frac = 0.0 if raw.test is not None else d.test_fraction
    if val_frac > 0 or test_frac > 0:
        idx = split_indices(n, spec.seed, val_frac, test_frac)
        for name in ("val", "test"):
            if name in idx:
                xs[name], ys[name] = x_all[idx[name]], ys["train"][idx[name]]
        xs["train"], ys["train"] = x_all[idx["train"]], ys["train"][idx["train"]]
    if xs["train"].shape[0] < 2:
        raise DataError(f"{where}the train split needs at least 2 samples, got {xs['train'].shape[0]} "
                        f"(from {n} with val_fraction={d.val_fraction}, test_fraction={d.test_fraction})",
                        path="data.source")

    # -- standardize -----------------------------------------------------------------------------
    mean = std = None
    if d.standardize:
        x64 = xs["train"].astype(np.float64)
        m = x64.mean(axis=0)
        s = x64.std(axis=0)
        s[~(s > 0)] = 1.0
        mean, std = m.astype(np.float32), s.astype(np.float32)
    splits = {name: Split(_apply_standardize(xs[name], mean, std), ys[name]) for name in xs}

    names = raw.feature_names
    width = x_all.shape[1]
    if names is None or len(names) != width:
        names = [f"x{i}" for i in range(width)]
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"), task=task, classes=classes,
        feature_names=[str(c) for c in names], mean=mean, std=std, batch_size=int(d.batch_size),
        shuffle=bool(d.shuffle), seed=int(spec.seed),
    )


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


def _apply_standardize(x: np.ndarray, mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> np.ndarray:
    if mean is None or std is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    out = (x.astype(np.float64) - mean.astype(np.float64)) / std.astype(np.float64)
    return np.ascontiguousarray(out, dtype=np.float32)


def _as_float_matrix(x: Any, *, what: str = "x", path: Optional[str] = None, allow_1d: bool = True
                     ) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged lists
        raise DataError(f"{what}: cannot make an array ({_one_line(e)})", path=path) from None
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


def _as_label_array(y: Any, *, what: str = "y") -> np.ndarray:
    try:
        arr = np.asarray(y)
    except ValueError as e:
        raise DataError(f"{what}: cannot make an array ({_one_line(e)})", path="data.source") from None
    if arr.ndim == 0:
        raise DataError(f"{what} must be 1-D [n] (or [n, k] for regression), got a scalar", path="data.source")
    return arr


def _flatten_labels(y: np.ndarray, task: str, *, what: str = "y") -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        return y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; more than one target column is only allowed for "
                        f"task regression (task is {task})", path="data.source")
    return y


def _normalize_labels(y: np.ndarray, task: str, *, what: str = "y") -> np.ndarray:
    """Labels as an int64 array (ints / integral floats / bools) or a str array."""
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
            bad = _py(y[frac][0])
            raise DataError(f"{what}: task {task} needs integer or string labels, got {bad!r} "
                            f"(use task: regression for continuous targets)", path="data.source")
        y = y.astype(np.int64)
        distinct = len(np.unique(y))
        if distinct > 20 and distinct > 0.2 * len(y):
            raise DataError(f"{what}: task {task} got {distinct} distinct numeric labels in {len(y)} samples, "
                            f"which looks continuous (use task: regression)", path="task")
        return y
    raise DataError(f"{what}: unsupported label dtype {y.dtype}", path="data.source")


def _regression_targets(y: np.ndarray, *, what: str = "y") -> np.ndarray:
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


def _py(v: Any) -> Any:
    """numpy scalar -> python int / float / str (JSON-serialisable)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _key(v: Any) -> Any:
    v = _py(v)
    return ("s", v) if isinstance(v, str) else ("n", v)


def _short_list(values: Optional[Sequence[Any]], limit: int = 10) -> str:
    values = list(values or [])
    text = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        text += f", ... ({len(values)} in all)"
    return f"[{text}]"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _choice(value: str, choices: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what} {value!r}{hint} (available columns: {', '.join(str(c) for c in choices)})"


# ----------------------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------------------

def _resolve_path(location: str, base_dir: Optional[str]) -> Path:
    p = Path(os.path.expanduser(location))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + ([Path(base_dir) / p] if base_dir else [])
    for c in candidates:
        if c.exists():
            if c.is_dir():
                raise DataError(f"expected a file, got a directory: {location}", path="data.source")
            return c
    raise DataError(f"file not found: {location}", path="data.source")


def _load_sklearn(name: str) -> _Raw:
    from sklearn import datasets  # lazy: keeps `import unified.data` fast

    loader = getattr(datasets, f"load_{name}", None)
    if loader is None:  # pragma: no cover - the spec validator restricts the names
        raise DataError(f"unknown sklearn dataset {name!r}", path="data.source")
    bunch = loader()
    names = getattr(bunch, "feature_names", None)
    return _Raw(x=bunch.data, y=bunch.target, feature_names=[str(n) for n in names] if names is not None else None,
                where=f"sklearn:{name}")


def _select_columns(columns: list[str], target: Optional[str], features: Optional[list[str]], where: str
                    ) -> tuple[str, list[str]]:
    if len(columns) < 2:
        raise DataError(f"{where}: needs at least 2 columns (features and a target), found {len(columns)}: "
                        f"{columns}", path="data.source")
    if target is None:
        target = columns[-1]
    elif target not in columns:
        raise DataError(f"{where}: " + _choice(target, columns, "unknown target column"), path="data.target")
    if features is None:
        features = [c for c in columns if c != target]
    else:
        for f in features:
            if f not in columns:
                raise DataError(f"{where}: " + _choice(f, columns, "unknown feature column"), path="data.features")
        if target in features:
            raise DataError(f"{where}: the target column {target!r} is also listed as a feature",
                            path="data.features")
        if not features:
            raise DataError(f"{where}: no feature columns selected", path="data.features")
    return target, list(features)


def _parse_float_column(cells: list[str], col: str, first_line: list[int], where: str, path: str) -> np.ndarray:
    try:
        arr = np.asarray(cells, dtype=str)
        if arr.size and np.any(np.char.str_len(np.char.strip(arr)) == 0):
            raise ValueError("empty")
        return arr.astype(np.float64)
    except ValueError:
        pass
    for value, line in zip(cells, first_line):
        if not value.strip():
            raise DataError(f"{where}: column {col!r}, row {line}: missing value", path=path)
        try:
            float(value)
        except ValueError:
            raise DataError(f"{where}: column {col!r}, row {line}: cannot parse {value!r} as a number",
                            path=path) from None
    raise DataError(f"{where}: column {col!r}: cannot parse as numbers", path=path)  # pragma: no cover


def _target_cells(cells: list[str], col: str, lines: list[int], where: str) -> np.ndarray:
    """Target column: numbers when every cell parses as one, else strings (stripped)."""
    for value, line in zip(cells, lines):
        if not value.strip():
            raise DataError(f"{where}: column {col!r}, row {line}: missing value", path="data.target")
    stripped = [c.strip() for c in cells]
    try:
        return np.asarray(stripped, dtype=str).astype(np.float64)
    except ValueError:
        return np.asarray(stripped, dtype=str)


def _load_csv(path: Path, target: Optional[str], features: Optional[list[str]]) -> _Raw:
    where = str(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{where}: cannot read: {e.strerror}", path="data.source") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and not any(c.strip() for c in header):
                header = next(reader, None)
            if header is None:
                raise DataError(f"{where}: the file is empty; expected a header row", path="data.source")
            columns = [c.strip() for c in header]
            if all(_is_number(c) for c in columns):
                raise DataError(f"{where}: the first row looks like data ({', '.join(columns[:4])}...); "
                                f"a header row with column names is required", path="data.source")
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            if dupes:
                raise DataError(f"{where}: duplicate column names: {', '.join(dupes)}", path="data.source")
            target, features = _select_columns(columns, target, features, where)
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(columns):
                    raise DataError(f"{where}: row {reader.line_num}: expected {len(columns)} cells, "
                                    f"got {len(row)}", path="data.source")
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise DataError(f"{where}: row {reader.line_num}: {_one_line(e)}", path="data.source") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not UTF-8 text ({e.reason})", path="data.source") from None
    if not rows:
        raise DataError(f"{where}: no data rows after the header", path="data.source")
    pos = {c: i for i, c in enumerate(columns)}
    cols = list(zip(*rows))
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        x[:, j] = _parse_float_column(list(cols[pos[name]]), name, lines, where, "data.source")
    y = _target_cells(list(cols[pos[target]]), target, lines, where)
    return _Raw(x=x, y=y, feature_names=features, where=where)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _load_npz(path: Path, x_key: str, y_key: str) -> _Raw:
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            for key, field_name in ((x_key, "x_key"), (y_key, "y_key")):
                if key not in keys:
                    raise DataError(f"{where}: no array {key!r} (data.{field_name}); keys present: "
                                    f"{', '.join(keys) or '(none)'}", path="data.source")
            x, y = z[x_key], z[y_key]
            names = z["feature_names"].tolist() if "feature_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: cannot read as .npz: {_one_line(e)}", path="data.source") from None
    return _Raw(x=x, y=y, feature_names=names, where=where)


def _load_parquet(path: Path, target: Optional[str], features: Optional[list[str]]) -> _Raw:
    where = str(path)
    try:
        import pyarrow.parquet as pq  # lazy, optional
    except ImportError:
        raise DataError(f"{where}: reading parquet needs pyarrow: pip install pyarrow", path="data.source") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error classes
        raise DataError(f"{where}: cannot read as parquet: {_one_line(e)}", path="data.source") from None
    columns = [str(c) for c in table.column_names]
    target, features = _select_columns(columns, target, features, where)
    x = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        col = table.column(name)
        if col.null_count:
            first = next(i for i, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{where}: column {name!r}, row {first + 1}: missing value", path="data.source")
        values = col.to_numpy(zero_copy_only=False)
        try:
            x[:, j] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            for i, v in enumerate(values.tolist()):
                try:
                    float(v)
                except (TypeError, ValueError):
                    raise DataError(f"{where}: column {name!r}, row {i + 1}: cannot parse {v!r} as a number",
                                    path="data.source") from None
            raise DataError(f"{where}: column {name!r} is not numeric", path="data.source") from None
    tcol = table.column(target)
    if tcol.null_count:
        first = next(i for i, v in enumerate(tcol.to_pylist()) if v is None)
        raise DataError(f"{where}: column {target!r}, row {first + 1}: missing value", path="data.target")
    y = np.asarray(tcol.to_pylist())
    return _Raw(x=x, y=y, feature_names=features, where=where)


def _load_python(location: str, kwargs: dict[str, Any], base_dir: Optional[str]) -> _Raw:
    module_name, _, fn_name = location.partition(":")
    where = f"python:{location}"
    added = []
    for entry in [os.getcwd()] + ([os.path.abspath(base_dir)] if base_dir else []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
            added.append(entry)
    try:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise DataError(f"cannot import module {module_name!r}: {_one_line(e)}", path="data.source") from None
        except Exception as e:  # a SyntaxError or an error raised while the module runs
            raise DataError(f"cannot import module {module_name!r}: {type(e).__name__}: {_one_line(e)}",
                            path="data.source") from None
        fn = getattr(module, fn_name, None)
        if fn is None or not callable(fn):
            what = "no function" if fn is None else "not a function:"
            raise DataError(f"module {module_name!r} has {what} {fn_name!r}", path="data.source")
        try:
            inspect.signature(fn).bind(**kwargs)
        except TypeError as e:
            raise DataError(f"{where}: data.kwargs do not fit the function: {_one_line(e)}",
                            path="data.kwargs") from None
        except ValueError:  # no signature available (builtins)
            pass
        result = fn(**kwargs)
    finally:
        for entry in added:
            try:
                sys.path.remove(entry)
            except ValueError:  # pragma: no cover
                pass
    return _python_result(result, where)


_EXPECTED = "expected (x, y), {'x': ..., 'y': ...} or {'train': (x, y), 'val': (x, y), 'test': (x, y)}"


def _python_result(result: Any, where: str) -> _Raw:
    if isinstance(result, dict):
        names = result.get("feature_names")
        keys = set(result) - {"feature_names"}
        if "train" in keys:
            extra = keys - {"train", "val", "test"}
            if extra:
                raise DataError(f"{where} returned unexpected keys {sorted(map(str, extra))}; {_EXPECTED}",
                                path="data.source")
            parts = {k: _result_pair(result[k], where, k)
                     for k in ("train", "val", "test") if result.get(k) is not None}
            if "train" not in parts:
                raise DataError(f"{where} returned train=None; {_EXPECTED}", path="data.source")
            return _Raw(x=parts["train"][0], y=parts["train"][1], feature_names=_names(names),
                        val=parts.get("val"), test=parts.get("test"), where=where)
        if keys == {"x", "y"}:
            return _Raw(x=result["x"], y=result["y"], feature_names=_names(names), where=where)
        raise DataError(f"{where} returned a dict with keys {sorted(map(str, result))}; {_EXPECTED}",
                        path="data.source")
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return _Raw(x=result[0], y=result[1], feature_names=None, where=where)
    raise DataError(f"{where} returned {type(result).__name__}; {_EXPECTED}", path="data.source")


def _result_pair(value: Any, where: str, key: str) -> tuple[Any, Any]:
    if isinstance(value, dict) and set(value) >= {"x", "y"}:
        return value["x"], value["y"]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{where} returned {key}={type(value).__name__}; {key} must be an (x, y) pair",
                    path="data.source")


def _names(names: Any) -> Optional[list[str]]:
    if names is None:
        return None
    return [str(n) for n in list(names)]
