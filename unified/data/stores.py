"""Samples read a batch at a time instead of held in RAM: memory-mapped arrays and image files.

A split's ``x`` is either a plain in-RAM ``numpy.ndarray`` of model inputs (already standardized: the fast
path, which adapters index directly) or a :class:`SampleStore` of *raw* samples that
:meth:`unified.data.Dataset.fetch` reads per batch, then augments (train split) and standardizes.

* :class:`ArrayStore`: rows of an array, in RAM or a ``numpy.memmap`` (``npy:`` / uncompressed ``npz:`` with
  ``data.mmap: true``); only the rows of a batch are read, so a file larger than RAM trains with a small
  resident set. The rows of a C-ordered map are read from its file with ``os.preadv`` straight into the
  batch: a page fault in a memory map brings in the whole (large) page-cache folio around it, so random rows
  read through the map made the resident set grow to the size of the file.
* :class:`ImageFileStore`: image files (``imagefolder:``), decoded with :func:`unified.data.images.load_image`
  when a batch is fetched.

Stores pickle small (a memory map pickles as its file, offset and layout, never its data), so worker
processes (:mod:`unified.data.workers`) receive the part of a store one batch needs.
"""

from __future__ import annotations

import mmap
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from unified.data.messages import one_line
from unified.errors import DataError

__all__ = ["SampleStore", "ArrayStore", "ImageFileStore", "open_npy", "open_npz_member", "RELEASE_BYTES"]

RELEASE_BYTES = 256 << 20
"""After this many bytes read from a memory map, its pages are released (``MADV_DONTNEED``)."""
CHUNK_BYTES = 16 << 20  # raw bytes per chunk when a store is streamed (standardization, checks)
FAULT_AROUND = 64 << 10  # the kernel maps this much around each page a read faults in (fault_around_bytes)
IMAGE_CHUNK = 256  # images per chunk when an image store is streamed


class SampleStore:
    """Raw samples, read by row indices. Subclasses implement :meth:`_read`, :meth:`_subset` and ``_sample_shape``.

    Attributes:
        shape: ``(n, *sample_shape)`` of the samples :meth:`take` returns (after ``data.shape``'s view).
        dtype: the model input's dtype: float32, or int64 for token ids.
        token_ids: whether samples are integer token ids (converted to int64, never standardized).
        checks_finite: whether values may be NaN/inf (float arrays) and need a check.
    """

    token_ids: bool = False
    checks_finite: bool = False
    chunk_rows: int = IMAGE_CHUNK

    def __init__(self, rows: Optional[np.ndarray], view: Optional[tuple[int, ...]]) -> None:
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.view = None if view is None else tuple(int(d) for d in view)

    # -- implemented by each store -------------------------------------------------------------------
    def _total(self) -> int:
        raise NotImplementedError

    def _sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The raw samples at absolute ``rows`` (in that order), shaped ``[len(rows), *_sample_shape()]``."""
        raise NotImplementedError

    def _copy(self, rows: Optional[np.ndarray], view: Optional[tuple[int, ...]]) -> "SampleStore":
        raise NotImplementedError

    # -- the interface -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        n = self._total() if self.rows is None else len(self.rows)
        return (int(n), *(self.view if self.view is not None else self._sample_shape()))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int64 if self.token_ids else np.float32)

    def __len__(self) -> int:
        return int(self.shape[0])

    def absolute(self, idx: Any) -> np.ndarray:
        """Row indices of this store -> rows of the underlying array / file list."""
        idx = np.asarray(idx, dtype=np.int64)
        return idx if self.rows is None else self.rows[idx]

    def take(self, idx: Any) -> np.ndarray:
        """The raw samples at ``idx`` (indices into this store), shaped ``[len(idx), *shape[1:]]``."""
        idx = np.asarray(idx, dtype=np.int64)
        out = self._read(self.absolute(idx))
        if self.view is not None:
            out = out.reshape(len(idx), *self.view)
        return out

    def subset(self, idx: Any) -> "SampleStore":
        """The store of rows ``idx`` of this one (nothing is read)."""
        return self._copy(self.absolute(idx), self.view)

    def with_view(self, shape: Sequence[int]) -> "SampleStore":
        """The same rows with each sample viewed as ``shape`` (``data.shape``); the caller checks the size."""
        return self._copy(self.rows, tuple(int(d) for d in shape))

    def values_per_sample(self) -> int:
        return int(np.prod(self._sample_shape()))

    def chunks(self) -> Iterator[tuple[int, "SampleStore"]]:
        """``(start, part)`` over consecutive runs of ``chunk_rows`` samples, in order (for streaming)."""
        n, step = len(self), max(1, int(self.chunk_rows))
        for start in range(0, n, step):
            yield start, self.subset(np.arange(start, min(n, start + step), dtype=np.int64))

    def release(self) -> None:
        """Hand pages read so far back to the OS (memory maps); a no-op otherwise."""


# -- arrays and memory maps ----------------------------------------------------------------------------

class ArrayStore(SampleStore):
    """Rows of an array kept raw: an in-RAM array (train split with augmentation) or a ``numpy.memmap``.

    Args:
        array: ``[N, ...]`` numeric array or memory map.
        rows: the rows of ``array`` this store holds (None: all), in order.
        view: ``data.shape``: each row viewed as one sample of this shape.
        token_ids: samples are token ids (int64 model input).
        source: for a memory map, ``(path, offset, dtype, shape, fortran_order)`` to reopen it from
            (pickling sends this instead of the data).
    """

    def __init__(self, array: np.ndarray, rows: Optional[np.ndarray] = None, view: Optional[tuple[int, ...]] = None,
                 *, token_ids: bool = False, source: Optional[tuple] = None) -> None:
        super().__init__(rows, view)
        self.array = array
        self.token_ids = bool(token_ids)
        self.checks_finite = array.dtype.kind == "f"
        self.source = source
        self._row_bytes = per_row = max(1, int(np.prod(array.shape[1:])) * array.dtype.itemsize)
        self.chunk_rows = max(1, CHUNK_BYTES // per_row)

    @property
    def mapped(self) -> bool:
        """Whether the samples stay on disk (a memory map)."""
        return isinstance(self.array, np.memmap)

    def _total(self) -> int:
        return int(self.array.shape[0])

    def _sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.array.shape[1:])

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self.mapped and self.source is not None and not self.source[4]:
            return _pread_rows(self.source, rows, self.array.dtype, tuple(self.array.shape[1:]))
        out = np.asarray(self.array[rows])  # fancy indexing copies just these rows, from disk for a memmap
        if self.mapped:
            # counted per mapping, across every view of it; a scattered row maps at least FAULT_AROUND bytes
            key = id(getattr(self.array, "_mmap", self.array))
            _READ[key] = _READ.get(key, 0) + len(rows) * max(self._row_bytes, FAULT_AROUND)
            if _READ[key] >= RELEASE_BYTES:
                self.release()
        return out

    def _copy(self, rows: Optional[np.ndarray], view: Optional[tuple[int, ...]]) -> "ArrayStore":
        return ArrayStore(self.array, rows, view, token_ids=self.token_ids, source=self.source)

    def subset(self, idx: Any) -> "SampleStore":
        rows = self.absolute(idx)
        if not self.mapped and len(rows) < len(self):  # in RAM: a batch's part carries just its rows
            return ArrayStore(self.array[rows], None, self.view, token_ids=self.token_ids)
        return self._copy(rows, self.view)

    def release(self) -> None:
        mm = getattr(self.array, "_mmap", None)
        _READ.pop(id(mm if mm is not None else self.array), None)
        if mm is not None and hasattr(mm, "madvise"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - a platform without it
                pass

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.mapped and self.source is not None:
            state["array"] = None  # reopened from `source` on the other side
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.array is None:
            self.array = _reopen(self.source)


_OPEN: dict[tuple, np.memmap] = {}  # a worker process reopens each memory map once
_READ: dict[int, int] = {}  # bytes read from each mapping since its pages were last released


def _reopen(source: tuple) -> np.memmap:
    mm = _OPEN.get(source)
    if mm is None:
        path, offset, dtype, shape, fortran = source
        mm = _OPEN[source] = np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=int(offset),
                                       shape=tuple(shape), order="F" if fortran else "C")
    return mm


_FDS: dict[str, int] = {}  # file descriptors for reading rows, one per file and process


def _pread_rows(source: tuple, rows: np.ndarray, dtype: np.dtype, row_shape: tuple[int, ...]) -> np.ndarray:
    """Rows ``rows`` of the C-ordered array ``source`` describes, read with ``os.preadv`` into one new array
    (a consecutive run of rows in one call)."""
    import os

    path, offset = source[0], int(source[1])
    out = np.empty((len(rows), *row_shape), dtype=dtype)
    if out.size == 0:
        return out
    fd = _FDS.get(path)
    if fd is None:
        fd = _FDS[path] = os.open(path, os.O_RDONLY)
    row_bytes = out.nbytes // len(rows)
    buf = memoryview(out.reshape(-1).view(np.uint8))
    first = int(rows[0])
    if len(rows) == 1 or (int(rows[-1]) - first == len(rows) - 1 and bool(np.all(np.diff(rows) == 1))):
        _pread_into(fd, buf, offset + first * row_bytes, path)
        return out
    for i, r in enumerate(rows.tolist()):
        _pread_into(fd, buf[i * row_bytes:(i + 1) * row_bytes], offset + r * row_bytes, path)
    return out


def _pread_into(fd: int, buf: memoryview, at: int, path: str) -> None:
    import os

    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], at + done)
        if n <= 0:
            raise DataError(f"{path}: the file ended before the rows it should hold (truncated while in use?)",
                            path="data.source")
        done += n


def _mappable(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DataError(f"{where}: dtype {dtype} cannot be memory-mapped as samples (expected numbers; set "
                        f"data.mmap: false)", path="data.mmap")


def open_npy(path: Path, where: Optional[str] = None) -> tuple[np.memmap, tuple]:
    """Memory-map a ``.npy`` file read-only: ``(memmap, source)`` (source reopens it in another process).

    Raises:
        DataError: not a readable ``.npy`` file, or a dtype that is not numeric.
    """
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = _read_header(f, version)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: cannot read as .npy: {one_line(e)}", path="data.source") from None
    _mappable(dtype, where)
    source = (str(path), offset, dtype.str, tuple(shape), bool(fortran))
    return _reopen(source), source


def open_npz_member(path: Path, key: str, where: Optional[str] = None) -> tuple[np.memmap, tuple]:
    """Memory-map array ``key`` of an uncompressed ``.npz`` (``numpy.savez``) through its offset in the zip.

    Raises:
        DataError: no such array, a compressed member (``numpy.savez_compressed``), or an unreadable file.
    """
    where = where or str(path)
    member = f"{key}.npy"
    try:
        with zipfile.ZipFile(path) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
                raise DataError(f"{where}: no array {key!r}; keys present: {', '.join(keys) or '(none)'}",
                                path="data.source") from None
            if info.compress_type != zipfile.ZIP_STORED:
                raise DataError(f"{where}: array {key!r} is compressed (numpy.savez_compressed) and cannot be "
                                f"memory-mapped; save it with numpy.savez (or numpy.save to a .npy), or set "
                                f"data.mmap: false to load it whole", path="data.mmap")
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError("bad local file header")
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = _read_header(f, version)
            offset = f.tell()
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: cannot read as .npz: {one_line(e)}", path="data.source") from None
    _mappable(dtype, where)
    source = (str(path), offset, dtype.str, tuple(shape), bool(fortran))
    return _reopen(source), source


def _read_header(f: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


# -- image files ------------------------------------------------------------------------------------------

class ImageFileStore(SampleStore):
    """Image files decoded per batch to float32 ``[C, H, W]`` in ``[0, 1]`` (:func:`load_image`'s rule).

    Args:
        paths: the files, one per sample.
        size: ``(H, W)`` every image is resized to.
        channels: 1, 3 or 4.
    """

    def __init__(self, paths: Sequence[str], size: Sequence[int], channels: int,
                 rows: Optional[np.ndarray] = None, view: Optional[tuple[int, ...]] = None) -> None:
        super().__init__(rows, view)
        self.paths = paths if isinstance(paths, np.ndarray) else np.asarray([str(p) for p in paths], dtype=object)
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)

    def _total(self) -> int:
        return len(self.paths)

    def _sample_shape(self) -> tuple[int, ...]:
        return (self.channels, *self.size)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        from unified.data.images import load_image

        out = np.empty((len(rows), self.channels, *self.size), dtype=np.uint8)
        for i, r in enumerate(rows.tolist()):
            out[i] = load_image(self.paths[r], size=self.size, channels=self.channels, scale=False)
        # the same arithmetic as load_image(scale=True), once for the whole batch
        return out.astype(np.float32) * np.float32(1.0 / 255.0)

    def _copy(self, rows: Optional[np.ndarray], view: Optional[tuple[int, ...]]) -> "ImageFileStore":
        return ImageFileStore(self.paths, self.size, self.channels, rows, view)

    def subset(self, idx: Any) -> "SampleStore":
        rows = self.absolute(idx)
        if len(rows) < len(self):  # a batch's part carries just its file names
            return ImageFileStore(self.paths[rows], self.size, self.channels, None, self.view)
        return self._copy(rows, self.view)
