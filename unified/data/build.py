"""From a source to a :class:`~unified.data.dataset.Dataset`: read, validate, encode, split, standardize.

The same steps for every source and for the user's own arrays, so a spec gives the same dataset
whichever way its data arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from unified.data.augment import Augment
from unified.data.dataset import Dataset, Split, split_indices
from unified.data.features import Moments, apply_standardize, as_samples, check_view, fit_standardize
from unified.data.fetch import scan_chunk
from unified.data.labels import as_label_array, encode_splits
from unified.data.sources import IMAGE_SCHEMES, MMAP_SCHEMES, RawData, read_source
from unified.data.stores import ArrayStore, SampleStore
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
    pool = _early_pool(spec.data)
    try:
        return build(spec, read_source(spec.data, base_dir), pool=pool)
    except BaseException:
        if pool is not None:
            pool.close()
        raise


def _early_pool(d: Any) -> Any:
    """For a source that is always read per batch (image files; memory maps), the ``data.num_workers``
    processes, started before the source is read: their start-up (``spawn``: an interpreter importing numpy
    and Pillow each, ~0.5 s) overlaps reading the folder's image headers instead of the first epoch."""
    if d.num_workers <= 0 or not (d.scheme in IMAGE_SCHEMES or (d.scheme in MMAP_SCHEMES and d.mmap)):
        return None
    from unified.data.workers import WorkerPool

    pool = WorkerPool(d.num_workers)
    pool.warm()
    return pool


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


def build(spec: "Spec", raw: RawData, pool: Any = None) -> Dataset:
    """The dataset the spec makes of ``raw``: validated, encoded, split, standardized.

    Features given as a :class:`~unified.data.stores.SampleStore` (memory maps, image files) stay where they
    are: they are checked and their statistics fitted by streaming over them, a chunk at a time.

    ``pool``: the ``data.num_workers`` processes when already started (:func:`load_dataset`).

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
    if raw.image is not None and task == "regression":
        raise DataError(f"{where}the labels of an image folder are its class folder names; task must be "
                        f"classification or binary, got regression", path="task")
    augment = _augment(d)

    parts: dict[str, tuple[Any, np.ndarray]] = {}
    for name, pair in (("train", (raw.x, raw.y)), ("val", raw.val), ("test", raw.test)):
        if pair is None:
            continue
        label = "" if name == "train" and raw.val is None and raw.test is None else f"{name} "
        if isinstance(pair[0], SampleStore):
            x = _store_samples(pair[0], f"{where}{label}x", view, token_ids)
        else:
            x = as_samples(pair[0], what=f"{where}{label}x", path="data.source", shape=view, token_ids=token_ids)
        y = as_label_array(pair[1], what=f"{where}{label}y")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{where}{label}x has {x.shape[0]} rows but y has {y.shape[0]}", path="data.source")
        if not isinstance(x, SampleStore):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            if bad:
                raise DataError(f"{where}{label}x holds {bad} NaN/inf value{'s' if bad != 1 else ''}",
                                path="data.source")
        parts[name] = (x, y)

    x_all = parts["train"][0]
    widths = {name: tuple(p[0].shape[1:]) for name, p in parts.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{where}splits have different sample shapes: {widths}", path="data.source")
    if augment is not None and len(x_all.shape) != 4:
        raise DataError(f"{where}augmentation (hflip, crop_padding) applies to images [C, H, W]; the samples are "
                        f"shaped {list(x_all.shape[1:])} (view rows as images with data.shape, e.g. [1, 8, 8])",
                        path="data.augment")

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
                xs[name], ys[name] = _rows(x_all, idx[name]), ys["train"][idx[name]]
        xs["train"], ys["train"] = _rows(x_all, idx["train"]), ys["train"][idx["train"]]
    if xs["train"].shape[0] < 2:
        raise DataError(f"{where}the train split needs at least 2 samples, got {xs['train'].shape[0]} "
                        f"(from {n} with val_fraction={d.val_fraction}, test_fraction={d.test_fraction})",
                        path="data.source")

    # -- check stores, standardize ---------------------------------------------------------------
    if pool is None and d.num_workers > 0 and any(isinstance(x, SampleStore) for x in xs.values()):
        from unified.data.workers import WorkerPool

        pool = WorkerPool(d.num_workers)
        pool.warm()  # the processes start while the statistics are streamed or the model is built
    moments = _scan(xs, bool(d.standardize), where, pool)
    mean = std = None
    if d.standardize:
        mean, std = moments.result() if moments is not None else fit_standardize(xs["train"])
    splits = {}
    for name, x in xs.items():
        if isinstance(x, SampleStore):
            splits[name] = Split(x, ys[name])
        elif token_ids:  # int64 token ids go to the model as they are
            splits[name] = Split(np.ascontiguousarray(x), ys[name])
        elif name == "train" and augment is not None:  # kept raw: augmented, then standardized, per batch
            splits[name] = Split(ArrayStore(np.ascontiguousarray(x)), ys[name])
        else:
            splits[name] = Split(apply_standardize(x, mean, std), ys[name])

    names = raw.feature_names
    width = int(np.prod(x_all.shape[1:]))
    if names is None or len(names) != width:
        names = [f"x{i}" for i in range(width)]
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"), task=task, classes=classes,
        feature_names=[str(c) for c in names], mean=mean, std=std, batch_size=int(d.batch_size),
        shuffle=bool(d.shuffle), seed=int(spec.seed), view_shape=view, augment=augment,
        num_workers=int(d.num_workers), image=raw.image, workers=pool,
    )


def _augment(d: Any) -> Optional[Augment]:
    """``data.augment`` as an :class:`Augment`, None when absent or doing nothing."""
    spec = getattr(d, "augment", None)
    if spec is None:
        return None
    aug = Augment(hflip=bool(spec.hflip), crop_padding=int(spec.crop_padding))
    return aug if aug.active else None


def _store_samples(store: SampleStore, what: str, view: Optional[tuple[int, ...]], token_ids: bool) -> SampleStore:
    """A store's samples checked like :func:`as_samples` checks arrays (nothing is read)."""
    if store.ndim < 2:
        store = store.with_view((1,))
    if view is not None:
        check_view(view, tuple(store.shape[1:]), what)
        store = store.with_view(view)
    store.token_ids = bool(token_ids)
    return store


def _rows(x: Any, rows: np.ndarray) -> Any:
    return x.subset(rows) if isinstance(x, SampleStore) else x[rows]


def _scan(xs: dict[str, Any], standardize: bool, where: str, pool: Any) -> Optional[Moments]:
    """One streaming pass over every store split that needs it: NaN/inf and token-id checks, and the train
    split's standardization statistics (``None`` when the train split is in RAM)."""
    jobs, owners = [], []
    for name, x in xs.items():
        if not isinstance(x, SampleStore):
            continue
        stats = standardize and name == "train" and not x.token_ids
        if not (stats or x.checks_finite or x.token_ids):
            continue
        for _, part in x.chunks():
            jobs.append((part, stats))
            owners.append(name)
    if not jobs:
        return None
    results = pool.imap(scan_chunk, jobs) if pool is not None else (scan_chunk(*job) for job in jobs)
    moments = Moments() if isinstance(xs["train"], SampleStore) else None
    bad = frac = neg = 0
    for name, (b, f, g, m) in zip(owners, results):
        bad, frac, neg = bad + b, frac + f, neg + g
        if m is not None and moments is not None and name == "train":
            moments.merge(*m)
    if bad:
        raise DataError(f"{where}x holds {bad} NaN/inf value{'s' if bad != 1 else ''}", path="data.source")
    if frac:
        raise DataError(f"{where}x: token ids (model.vocab_size is set) must be whole numbers", path="data.source")
    if neg:
        raise DataError(f"{where}x: token ids must be >= 0 ({neg} are negative)", path="data.source")
    return moments if moments is not None and moments.n else None


def _pair(value: Any, name: str) -> Optional[tuple[Any, Any]]:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) >= {"x", "y"}:
        return value["x"], value["y"]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DataError(f"{name}: expected an (x, y) pair, got {type(value).__name__}", path="data.source")
