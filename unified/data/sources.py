"""Where the data comes from: one reader per ``data.source`` scheme, all listed in :data:`SOURCES`.

A reader takes the spec's ``data`` section and the spec file's folder and returns a :class:`RawData`: the
arrays as read, before any encoding, splitting or standardizing (``unified.data.build`` does that, the
same for every source). :data:`SOURCES` is the one list of schemes; ``unified.spec`` validates
``data.source`` against it.

Importing this module imports neither numpy nor a reader's library (scikit-learn, pyarrow): those load
when a reader runs, so the spec can take the scheme list from here cheaply.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from unified.data.messages import one_line
from unified.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from unified.spec import DataSpec

__all__ = ["RawData", "Reader", "SOURCES", "MMAP_SCHEMES", "IMAGE_SCHEMES", "read_source", "resolve_path"]


@dataclass
class RawData:
    """What a reader returns: features and targets as read, with optional given val/test splits.

    Attributes:
        x: features (anything ``numpy.asarray`` makes ``[n, ...]`` of), or a
            :class:`unified.data.stores.SampleStore` read per batch (memory maps, image files).
        y: labels or values ``[n]`` (``[n, k]`` for multi-output regression).
        feature_names: column names when the source has them.
        val: an ``(x, y)`` pair used as the validation split instead of splitting one off.
        test: an ``(x, y)`` pair used as the test split instead of splitting one off.
        where: the source as named in messages (a file path, ``sklearn:iris`` ...; "" for user arrays).
        image: ``{"size": [H, W], "channels": C}`` for decoded images (``imagefolder:``): how a served
            upload is decoded like the training data.
    """

    x: Any
    y: Any
    feature_names: Optional[list[str]]
    val: Optional[tuple[Any, Any]] = None
    test: Optional[tuple[Any, Any]] = None
    where: str = ""
    image: Optional[dict] = None


Reader = Callable[["DataSpec", Optional[str]], RawData]
"""``reader(data, base_dir) -> RawData``: ``data`` is ``spec.data``, ``base_dir`` the spec file's folder."""


def resolve_path(location: str, base_dir: Optional[str], *, directory: bool = False) -> Path:
    """The file (or, with ``directory``, the folder) ``location`` names: absolute, else under the working
    directory, else under ``base_dir``.

    Raises:
        DataError: no such file, or a directory where a file is expected (and the reverse).
    """
    p = Path(os.path.expanduser(location))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + ([Path(base_dir) / p] if base_dir else [])
    for c in candidates:
        if c.exists():
            if c.is_dir() != directory:
                want, got = ("a directory", "a file") if directory else ("a file", "a directory")
                raise DataError(f"expected {want}, got {got}: {location}", path="data.source")
            return c
    raise DataError(f"{'directory' if directory else 'file'} not found: {location}", path="data.source")


# -- readers ---------------------------------------------------------------------------------------

def read_sklearn(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``sklearn:<name>``: one of scikit-learn's bundled toy datasets (``load_<name>``)."""
    from sklearn import datasets  # lazy: keeps `import unified.data` fast

    name = data.location
    loader = getattr(datasets, f"load_{name}", None)
    if loader is None:  # pragma: no cover - the spec validator restricts the names
        raise DataError(f"unknown sklearn dataset {name!r}", path="data.source")
    bunch = loader()
    names = getattr(bunch, "feature_names", None)
    return RawData(x=bunch.data, y=bunch.target,
                   feature_names=[str(n) for n in names] if names is not None else None, where=f"sklearn:{name}")


def read_csv(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``csv:<path>``: a header row, then numeric feature columns and a target column."""
    from unified.data.tables import load_csv

    return load_csv(resolve_path(data.location, base_dir), data.target, data.features)


def read_parquet(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``parquet:<path>``: like csv, read with pyarrow (an optional dependency)."""
    from unified.data.tables import load_parquet

    return load_parquet(resolve_path(data.location, base_dir), data.target, data.features)


def read_npz(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``npz:<path>``: arrays ``data.x_key`` and ``data.y_key`` (and ``feature_names`` when present).

    With ``data.mmap``, ``x`` is memory-mapped through its offset in the (uncompressed) zip, never loaded.
    """
    import numpy as np

    path = resolve_path(data.location, base_dir)
    where = str(path)
    mapped = None
    if getattr(data, "mmap", False):
        from unified.data.stores import ArrayStore, open_npz_member

        mm, src = open_npz_member(path, data.x_key, where)
        mapped = ArrayStore(mm, source=src)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            for key, field_name in ((data.x_key, "x_key"), (data.y_key, "y_key")):
                if key not in keys:
                    raise DataError(f"{where}: no array {key!r} (data.{field_name}); keys present: "
                                    f"{', '.join(keys) or '(none)'}", path="data.source")
            x, y = (mapped if mapped is not None else z[data.x_key]), z[data.y_key]
            names = z["feature_names"].tolist() if "feature_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: cannot read as .npz: {one_line(e)}", path="data.source") from None
    return RawData(x=x, y=y, feature_names=names, where=where)


def read_npy(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``npy:<x.npy>,<y.npy>``: two ``.npy`` files; with ``data.mmap``, ``x`` is memory-mapped."""
    import numpy as np

    parts = [p.strip() for p in data.location.split(",")]
    if len(parts) != 2 or not all(parts):
        raise DataError(f"expected 'npy:<x.npy>,<y.npy>' (the features file, a comma, the targets file), got "
                        f"{data.source!r}", path="data.source")
    x_path, y_path = (resolve_path(p, base_dir) for p in parts)
    arrays = []
    for path, role in ((x_path, "x"), (y_path, "y")):
        if role == "x" and getattr(data, "mmap", False):
            from unified.data.stores import ArrayStore, open_npy

            mm, src = open_npy(path)
            arrays.append(ArrayStore(mm, source=src))
            continue
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read as .npy: {one_line(e)}", path="data.source") from None
    return RawData(x=arrays[0], y=arrays[1], feature_names=None, where=str(x_path))


def read_imagefolder(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``imagefolder:<dir>``: one subfolder per class (see :mod:`unified.data.imagefolder`)."""
    from unified.data.imagefolder import read_imagefolder as read

    return read(data, base_dir)


def read_python(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """``python:<module>:<function>``: the user's function, called with ``data.kwargs``.

    The working directory and ``base_dir`` are on ``sys.path`` while the module is imported and the
    function runs. It returns ``(x, y)``, ``{"x": ..., "y": ...}`` or ``{"train": (x, y), "val": ...,
    "test": ...}``, each dict optionally with ``feature_names``.
    """
    location, kwargs = data.location, data.kwargs
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
            raise DataError(f"cannot import module {module_name!r}: {one_line(e)}", path="data.source") from None
        except Exception as e:  # a SyntaxError or an error raised while the module runs
            raise DataError(f"cannot import module {module_name!r}: {type(e).__name__}: {one_line(e)}",
                            path="data.source") from None
        fn = getattr(module, fn_name, None)
        if fn is None or not callable(fn):
            what = "no function" if fn is None else "not a function:"
            raise DataError(f"module {module_name!r} has {what} {fn_name!r}", path="data.source")
        try:
            inspect.signature(fn).bind(**kwargs)
        except TypeError as e:
            raise DataError(f"{where}: data.kwargs do not fit the function: {one_line(e)}",
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


SOURCES: dict[str, Reader] = {
    "sklearn": read_sklearn,
    "csv": read_csv,
    "npz": read_npz,
    "npy": read_npy,
    "parquet": read_parquet,
    "python": read_python,
    "imagefolder": read_imagefolder,
}
"""``data.source`` scheme -> reader: the one list of schemes (the spec validates against its keys)."""

MMAP_SCHEMES = ("npz", "npy")
"""Schemes whose features ``data.mmap: true`` memory-maps (uncompressed ``.npy`` / ``.npz``)."""
IMAGE_SCHEMES = ("imagefolder",)
"""Schemes that decode image files, shaped by ``data.image``."""


def read_source(data: "DataSpec", base_dir: Optional[str] = None) -> RawData:
    """Read ``data.source`` with its scheme's reader.

    Raises:
        DataError: no source, an unknown scheme, or the reader's one-line complaint.
    """
    if data.source is None:
        raise DataError("required field is missing (e.g. 'sklearn:digits'); only UnifiedTrainer.fit(data=...) "
                        "runs without it", path="data.source")
    reader = SOURCES.get(data.scheme)
    if reader is None:  # pragma: no cover - the spec validator rejects other schemes
        raise DataError(f"unknown data scheme {data.scheme!r}", path="data.source")
    return reader(data, base_dir)


# -- what a python: function returned --------------------------------------------------------------

_EXPECTED = "expected (x, y), {'x': ..., 'y': ...} or {'train': (x, y), 'val': (x, y), 'test': (x, y)}"


def _python_result(result: Any, where: str) -> RawData:
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
            return RawData(x=parts["train"][0], y=parts["train"][1], feature_names=_names(names),
                           val=parts.get("val"), test=parts.get("test"), where=where)
        if keys == {"x", "y"}:
            return RawData(x=result["x"], y=result["y"], feature_names=_names(names), where=where)
        raise DataError(f"{where} returned a dict with keys {sorted(map(str, result))}; {_EXPECTED}",
                        path="data.source")
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return RawData(x=result[0], y=result[1], feature_names=None, where=where)
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
