"""Request bodies to float32 numpy batches (numpy + orjson only): parsing, validation, one-line reasons.

Every protocol turns its JSON into the same checked batch here, so a bad value gets the same reason
whichever route it came through: not a list of samples, ragged, a string / null / boolean where a number
belongs, a value that is not a finite float32, the wrong sample shape, too many rows.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Constant(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def load_json(body: bytes, expected: str) -> Any:
    """Parse a request body with orjson (the standard library only names what is wrong).

    Args:
        body: the raw bytes.
        expected: what the body should look like, for the message on an empty body.

    Raises:
        BadRequest: 400 for an empty body or invalid JSON, 422 for NaN / Infinity.
    """
    if not body.strip():
        raise BadRequest(400, f"empty body; expected JSON {expected}")
    try:
        return _orjson().loads(body)
    except ImportError:
        pass
    except ValueError:  # orjson.JSONDecodeError; the slow parser below says what and where
        pass
    try:
        return json.loads(body, parse_constant=_reject_constant)  # 1e999 parses (to inf, refused later)
    except _Constant as c:
        raise BadRequest(422, f"inputs hold {c}; only finite numbers are accepted") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"body is not valid JSON ({e})") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply to be a request") from None


def dump_json(doc: Any) -> bytes:
    """``doc`` as JSON bytes; numpy arrays are written directly (orjson), float32 as their shortest repr."""
    try:
        orjson = _orjson()
    except ImportError:  # pragma: no cover - orjson is part of the serve extra
        return json.dumps(doc, default=lambda a: a.tolist()).encode()
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


_ORJSON: list[Any] = []


def _orjson() -> Any:
    """orjson, imported on first use (``import unified.serve`` stays light)."""
    if not _ORJSON:
        import orjson

        _ORJSON.append(orjson)
    return _ORJSON[0]


def kind(v: Any) -> str:
    """The JSON type name of a parsed value."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__)


def to_batch(value: Any, sample_shape: Sequence[Optional[int]], max_rows: int, *, where: str = "inputs",
             booleans_possible: bool = True, dtype: str = "float32") -> np.ndarray:
    """A ``[n, *sample_shape]`` batch from nested lists (one sample per row), or :class:`BadRequest`.

    Args:
        value: the parsed JSON value.
        sample_shape: one sample's shape; ``None`` for a dimension of any size.
        max_rows: most samples accepted (413 above it).
        where: the value's name in messages (``inputs``, ``instances``...).
        booleans_possible: False when the raw body holds no ``true``/``false`` (skips a scan).
        dtype: the model's input dtype: ``float32`` (finite values) or ``int64`` (token ids: integers).
    """
    if not isinstance(value, list):
        raise BadRequest(422, f"{where} must be a list of rows [[...], ...], got a JSON {kind(value)}")
    if not value:
        raise BadRequest(422, f"{where} is empty; send at least one row")
    if len(value) > max_rows:
        raise BadRequest(413, f"{where} has {len(value)} rows; this server takes at most {max_rows} per request")
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        arr = None
    ndim = 1 + len(sample_shape)
    if arr is None or arr.ndim != ndim or arr.dtype.kind not in "iuf":
        raise BadRequest(422, locate_problem(value, sample_shape, where))
    check_sample_shape(arr.shape, sample_shape, where)
    if booleans_possible:  # numpy turns booleans mixed with numbers into 1 / 0
        path = _find_bool(value, where)
        if path:
            raise BadRequest(422, f"{path} is a boolean; expected a number")
    return as_int64(arr, where) if dtype == "int64" else finite_float32(arr, where)


def as_int64(arr: np.ndarray, where: str) -> np.ndarray:
    """``arr`` as int64 token ids, or 422 naming the first value that is not an integer."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > 2 ** 62)
        if bad.any():
            idx = tuple(int(v) for v in np.argwhere(bad)[0])
            raise BadRequest(422, f"{where}{''.join(f'[{i}]' for i in idx)} = {float(arr[idx])!r} is not an integer; "
                                  f"this model takes int64 token ids")
    return arr.astype(np.int64, copy=False)


def check_sample_shape(shape: Sequence[int], sample_shape: Sequence[Optional[int]], where: str) -> None:
    """422 unless ``shape[1:]`` fits ``sample_shape`` (``None`` matches any size)."""
    got = tuple(shape[1:])
    if len(got) == len(sample_shape) and all(w is None or w == g for w, g in zip(sample_shape, got)):
        return
    if len(sample_shape) == 1 and len(got) == 1:
        raise BadRequest(422, f"each row must have {sample_shape[0]} features, got {got[0]} (shape "
                              f"[{shape[0]}, {got[0]}])")
    raise BadRequest(422, f"each sample of {where} must have shape {_fmt(sample_shape)}, got {list(got)} "
                          f"(batch shape {list(shape)})")


def finite_float32(arr: np.ndarray, where: str) -> np.ndarray:
    """``arr`` as float32, or 422 naming the first value that is not a finite float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = arr.astype(np.float32, copy=False)
        if math.isfinite(float(x.sum(dtype=np.float64))):  # one reduction; a float64 sum of float32 cannot overflow
            return x
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            idx = tuple(int(v) for v in np.argwhere(~finite)[0])
            raise BadRequest(422, f"{where}{''.join(f'[{i}]' for i in idx)} = {float(arr[idx])!r} is not a finite float32")
    return x


def _fmt(shape: Sequence[Optional[int]]) -> str:
    return "[" + ", ".join("any" if d is None else str(d) for d in shape) + "]"


def _find_bool(value: Any, where: str) -> Optional[str]:
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        v, path = stack.pop()
        if isinstance(v, bool):
            return path
        if isinstance(v, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(v))))
    return None


def locate_problem(value: list, sample_shape: Sequence[Optional[int]], where: str) -> str:
    """The first thing that keeps ``value`` from being a numeric ``[n, *sample_shape]`` array, in one line."""
    ndim = 1 + len(sample_shape)
    want: list[Optional[int]] = [None, *sample_shape]
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        v, path, depth = stack.pop()
        if depth < ndim:
            if not isinstance(v, list):
                if depth == 1 and ndim == 2:
                    return (f"{path} is a JSON {kind(v)}; expected a row (a list of numbers): "
                            f"{where} must be [[...], ...]")
                return f"{path} is a JSON {kind(v)}; expected a list ({where} must be nested {ndim} deep)"
            if want[depth] is None and depth > 0:
                want[depth] = len(v)
            if depth > 0 and len(v) != want[depth]:
                noun = "values" if depth == ndim - 1 else "items"
                return (f"{path} has {len(v)} {noun}, expected {want[depth]} (every row needs the same number "
                        f"of features)" if ndim == 2 else f"{path} has {len(v)} {noun}, expected {want[depth]}")
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in reversed(list(enumerate(v))))
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{path} is a JSON {kind(v)} ({json.dumps(v)[:40]}); expected a number"
            if isinstance(v, int) and abs(v) > 2 ** 63 - 1:
                return f"{path} = {v} is out of range"
            if isinstance(v, float) and not math.isfinite(v):
                return f"{path} = {v!r} is not a finite float32"
    return f"{where} must be a rectangular list of numbers [[...], ...]"


def parse_inputs(body: bytes, width: Optional[int], max_rows: int,
                 sample_shape: Optional[Sequence[Optional[int]]] = None, dtype: str = "float32") -> np.ndarray:
    """The float32 batch of a ``/predict`` body ``{"inputs": [[...], ...]}``, or :class:`BadRequest`.

    Args:
        body: the raw request body.
        width: features per row of a table model (``None``: any); ignored when ``sample_shape`` is given.
        max_rows: most rows accepted.
        sample_shape: one sample's shape for an N-D model.
        dtype: the model's input dtype (``float32`` or ``int64``).
    """
    doc = load_json(body, '{"inputs": [[...], ...]}')
    if not isinstance(doc, dict):
        raise BadRequest(422, f'expected a JSON object {{"inputs": [[...], ...]}}, got a JSON {kind(doc)}')
    if "inputs" not in doc:
        raise BadRequest(422, f"missing key 'inputs' (got keys: {', '.join(map(repr, doc)) or 'none'})")
    extra = [k for k in doc if k != "inputs"]
    if extra:
        raise BadRequest(422, f"unknown key {extra[0]!r}; the body takes only 'inputs'")
    shape = tuple(sample_shape) if sample_shape is not None else (width,)
    return to_batch(doc["inputs"], shape, max_rows, booleans_possible=b"true" in body or b"false" in body, dtype=dtype)
