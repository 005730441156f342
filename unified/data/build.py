"""From a source to a :class:`~unified.data.dataset.Dataset`: read, validate, encode, split, standardize.

The same steps for every source and for the user's own arrays, so a spec gives the same dataset
whichever way its data arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from unified.data.dataset import Dataset, Split, split_indices
from unified.data.features import apply_standardize, as_samples, fit_standardize
from unified.data.labels import as_label_array, encode_splits
from unified.data.sources import RawData, read_source
from unified.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from unified.spec import Spec

__all__ = ["load_dataset", "dataset_from_arrays", "build"]


def load_dataset(spec: "Spec", base_dir: Optional[str] = None) -> Dataset:
    """Load, encode, split and standardize the data named by ``spec.data.source``.

    Args:
        spec: the experiment spec.
        base_dir: the spec file's folder; relative paths not found in the working directory are
            looked up there, and it is put on ``sys.path`` for ``python:`` sources.

    Raises:
        DataError: a one-line message naming the field (``data.source`` ...), the file and the problem.
    """
    return build(spec, read_source(spec.data, base_dir))


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
    raw = RawData(x=x, y=y, feature_names=None, val=_pair(val, "val"), test=_pair(test, "test"), where="")
    return build(spec, raw)


def build(spec: "Spec", raw: RawData) -> Dataset:
    """The dataset the spec makes of ``raw``: validated, encoded, split, standardized.

    Raises:
        DataError: one line naming the source and the problem.
    """
    d = spec.data
    task = spec.task
    where = f"{raw.where}: " if raw.where else ""
    view = tuple(d.shape) if d.shape else None
    token_ids = getattr(spec.model, "vocab_size", None) is not None
    if token_ids and d.standardize:
        raise DataError("token ids (model.vocab_size is set) are not standardized; set data.standardize: false",
                        path="data.standardize")

    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pair in (("train", (raw.x, raw.y)), ("val", raw.val), ("test", raw.test)):
        if pair is None:
            continue
        label = "" if name == "train" and raw.val is None and raw.test is None else f"{name} "
        x = as_samples(pair[0], what=f"{where}{label}x", path="data.source", shape=view, token_ids=token_ids)
        y = as_label_array(pair[1], what=f"{where}{label}y")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{where}{label}x has {x.shape[0]} rows but y has {y.shape[0]}", path="data.source")
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DataError(f"{where}{label}x holds {bad} NaN/inf value{'s' if bad != 1 else ''}",
                            path="data.source")
        parts[name] = (x, y)

    x_all = parts["train"][0]
    widths = {name: tuple(p[0].shape[1:]) for name, p in parts.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{where}splits have different sample shapes: {widths}", path="data.source")

    ys, classes = encode_splits({name: p[1] for name, p in parts.items()}, task, where)

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
        mean, std = fit_standardize(xs["train"])
    if token_ids:  # int64 token ids go to the model as they are
        splits = {name: Split(np.ascontiguousarray(xs[name]), ys[name]) for name in xs}
    else:
        splits = {name: Split(apply_standardize(xs[name], mean, std), ys[name]) for name in xs}

    names = raw.feature_names
    width = int(np.prod(x_all.shape[1:]))
    if names is None or len(names) != width:
        names = [f"x{i}" for i in range(width)]
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"), task=task, classes=classes,
        feature_names=[str(c) for c in names], mean=mean, std=std, batch_size=int(d.batch_size),
        shuffle=bool(d.shuffle), seed=int(spec.seed), view_shape=view,
    )


def _pair(value: Any, name: str) -> Optional[tuple[Any, Any]]:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) >= {"x", "y"}:
        return value["x"], value["y"]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{name}: expected an (x, y) pair, got {type(value).__name__}", path="data.source")
