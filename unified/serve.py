"""``unified serve``: an exported model behind a small HTTP API (FastAPI + uvicorn).

Endpoints:

* ``POST /predict`` with ``{"inputs": [[f1, f2, ...], ...]}`` (raw features, one row per sample) answers
  ``{"outputs": [[...], ...], "predictions": [...]}``: the model's outputs (logits for classification) and
  the class labels (classification, binary: from the manifest) or the values (regression).
* ``GET /health``: ``{"status": "ok", "format": ..., "runtime": ...}``.
* ``GET /metadata``: the export manifest plus the serving limits.

Bad requests never reach the model and never stop the server: 400 for a body that is not JSON, 413 for
a body over ``max_body_bytes`` or more than ``max_rows`` rows, 422 for anything else that is not a
rectangular list of finite numbers of the manifest's width; the answer is ``{"detail": "<what is wrong>"}``.
FastAPI, uvicorn and the runtime are imported when a server is created (``pip install "unified-trainer[serve]"``).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime.

import importlib.util
import json
import socket
import sys
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from unified.errors import BackendUnavailableError, SpecError
from unified.export.manifest import MANIFEST, find_artifact, load_manifest
from unified.export.runtimes import Runner, load_runner

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY = 16 * 1024 * 1024
INLINE_ELEMENTS = 16_384  # inputs up to this many values run on the event loop


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


# -- the model behind the server ------------------------------------------------------------------------

def resolve_artifact(artifact: Union[str, Path], fmt: Optional[str] = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(manifest, artifact entry, artifact path) for an export dir, a run dir or an artifact file.

    A bare ``.onnx`` file without a manifest beside it is served with a manifest read off the graph
    (no class labels: ``predictions`` are then the outputs).
    """
    path = Path(artifact)
    if not path.exists():
        raise SpecError(f"{path}: no such file or directory", path="ARTIFACT")
    if path.is_dir():
        root = path if (path / MANIFEST).is_file() else path / "export"
        if not (root / MANIFEST).is_file():
            raise SpecError(f"{path}: no {MANIFEST} here or in {path / 'export'}; pass an export directory, a run "
                            f"directory with export/, or a .onnx file (create one with `unified export RUN_DIR`)",
                            path="ARTIFACT")
        manifest = load_manifest(root / MANIFEST)
        if fmt is None and any(e.get("format") == "onnx" for e in manifest["artifacts"]):
            fmt = "onnx"
        entry = find_artifact(manifest, fmt, str(root / MANIFEST))
        return manifest, entry, root / entry["path"]
    beside = path.parent / MANIFEST
    if beside.is_file():
        manifest = load_manifest(beside)
        for entry in manifest["artifacts"]:
            if entry.get("path") == path.name:
                return manifest, entry, path
    if path.suffix != ".onnx":
        raise SpecError(f"{path}: serving a {path.suffix or 'extension-less'} file needs the {MANIFEST} written "
                        f"beside it by `unified export`; a bare file can only be a .onnx", path="ARTIFACT")
    return _bare_onnx_manifest(path), {"format": "onnx", "path": path.name}, path


def _bare_onnx_manifest(path: Path) -> dict[str, Any]:
    _require("onnxruntime")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise SpecError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})", path="ARTIFACT") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    width = inp.shape[1] if len(inp.shape) == 2 and isinstance(inp.shape[1], int) else None
    return {"manifest_version": 1, "task": None, "classes": None,
            "input": {"name": inp.name, "shape": [None, width], "dtype": "float32"},
            "output": {"name": out.name, "shape": [None, *out.shape[1:]], "dtype": "float32", "predictions": "outputs"},
            "source": {"file": str(path)}, "artifacts": [{"format": "onnx", "path": path.name,
                                                          "input_name": inp.name, "output_name": out.name}]}


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f'`unified serve` needs {module}: pip install "unified-trainer[serve]"')


# -- request validation (numpy only) ------------------------------------------------------------------------

class _Constant(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def parse_inputs(body: bytes, width: Optional[int], max_rows: int) -> np.ndarray:
    """The float32 ``[n, width]`` matrix of a ``/predict`` body, or :class:`BadRequest` naming the problem."""
    if not body.strip():
        raise BadRequest(400, 'empty body; expected JSON {"inputs": [[...], ...]}')
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except _Constant as c:
        raise BadRequest(422, f"inputs hold {c}; only finite numbers are accepted") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"body is not valid JSON ({e})") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply to be a request") from None
    if not isinstance(doc, dict):
        raise BadRequest(422, f'expected a JSON object {{"inputs": [[...], ...]}}, got a JSON {_kind(doc)}')
    if "inputs" not in doc:
        raise BadRequest(422, f"missing key 'inputs' (got keys: {', '.join(map(repr, doc)) or 'none'})")
    extra = [k for k in doc if k != "inputs"]
    if extra:
        raise BadRequest(422, f"unknown key {extra[0]!r}; the body takes only 'inputs'")
    rows = doc["inputs"]
    if not isinstance(rows, list):
        raise BadRequest(422, f"inputs must be a list of rows [[...], ...], got a JSON {_kind(rows)}")
    if not rows:
        raise BadRequest(422, "inputs is empty; send at least one row")
    if len(rows) > max_rows:
        raise BadRequest(413, f"inputs has {len(rows)} rows; this server takes at most {max_rows} per request")
    try:
        arr = np.asarray(rows)
    except (ValueError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.dtype.kind not in "iuf":
        raise BadRequest(422, _locate_problem(rows, width))
    if width is not None and arr.shape[1] != width:
        raise BadRequest(422, f"each row must have {width} features, got {arr.shape[1]} (shape [{arr.shape[0]}, "
                              f"{arr.shape[1]}])")
    if b"true" in body or b"false" in body:  # numpy turns booleans mixed with numbers into 1.0 / 0.0
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                if isinstance(v, bool):
                    raise BadRequest(422, f"inputs[{i}][{j}] is a boolean ({json.dumps(v)}); expected a number")
    with np.errstate(over="ignore", invalid="ignore"):
        x = arr.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise BadRequest(422, f"inputs[{i}][{j}] = {rows[i][j]!r} is not a finite float32")
    return x


def _kind(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__)


def _locate_problem(rows: list, width: Optional[int]) -> str:
    want = width
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            return (f"inputs[{i}] is a JSON {_kind(row)}; expected a row (a list of numbers): "
                    f"inputs must be [[...], ...]")
        if want is None:
            want = len(row)
        if len(row) != want:
            return f"inputs[{i}] has {len(row)} values, expected {want} (every row needs the same number of features)"
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"inputs[{i}][{j}] is a JSON {_kind(v)} ({json.dumps(v)[:40]}); expected a number"
            if isinstance(v, int) and abs(v) > 2 ** 63 - 1:
                return f"inputs[{i}][{j}] = {v} is out of range"
    return "inputs must be a rectangular list of numbers [[...], ...]"


def predictions(manifest: dict[str, Any], outputs: np.ndarray) -> list:
    """Class labels (classification, binary) or values (regression) read off the outputs."""
    task, classes = manifest.get("task"), manifest.get("classes")
    if task == "classification":
        idx = outputs.reshape(len(outputs), -1).argmax(axis=1)
        return [classes[i] for i in idx.tolist()] if classes else idx.tolist()
    if task == "binary":
        idx = (outputs.reshape(len(outputs), -1)[:, 0] > 0).astype(np.int64)
        return [classes[i] for i in idx.tolist()] if classes else idx.tolist()
    flat = outputs.reshape(len(outputs), -1)
    return flat[:, 0].tolist() if flat.shape[1] == 1 else flat.tolist()


# -- the app -----------------------------------------------------------------------------------------------

def create_app(artifact: Union[str, Path], *, fmt: Optional[str] = None, max_rows: int = DEFAULT_MAX_ROWS,
               max_body_bytes: int = DEFAULT_MAX_BODY) -> Any:
    """A FastAPI app serving ``artifact`` (loaded once, here; errors surface before serving)."""
    if max_rows < 1:
        raise SpecError(f"must be >= 1, got {max_rows}", path="--max-rows")
    if max_body_bytes < 64:
        raise SpecError(f"must be >= 64, got {max_body_bytes}", path="--max-body-bytes")
    _require("fastapi")
    manifest, entry, path = resolve_artifact(artifact, fmt)
    runner = load_runner(entry["format"], path, entry)
    return _build_app(manifest, entry, runner, max_rows, max_body_bytes)


def _build_app(manifest: dict[str, Any], entry: dict[str, Any], runner: Runner, max_rows: int,
               max_body_bytes: int) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    shape = manifest["input"].get("shape") or [None, None]
    width = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
    meta = {**manifest, "serving": {"format": entry["format"], "path": entry["path"], "runtime": runner.runtime,
                                    "max_rows": max_rows, "max_body_bytes": max_body_bytes}}
    app = FastAPI(title="unified serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # the server keeps running
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "format": entry["format"], "runtime": runner.runtime}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return meta

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"body of {int(declared)} bytes is over the limit of {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error(413, f"body is over the limit of {max_body_bytes} bytes")
        try:
            x = parse_inputs(bytes(body), width, max_rows)
        except BadRequest as e:
            return error(e.status, e.detail)
        try:
            # Small batches run inline (onnxruntime takes microseconds; a thread hop costs more); large
            # ones, and runtimes that serialize calls behind a lock, run in the thread pool.
            inline = runner.lock is None and x.size <= INLINE_ELEMENTS
            outputs = runner(x) if inline else await run_in_threadpool(runner, x)
        except Exception as e:  # noqa: BLE001 - e.g. a bare ONNX file whose width was unknown
            return error(422, f"the model refused the inputs: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}")
        outputs = outputs.reshape(len(x), -1) if outputs.ndim == 1 else outputs
        return JSONResponse({"outputs": outputs.tolist(), "predictions": predictions(manifest, outputs)})

    return app


def serve(artifact: Union[str, Path], *, host: str = "127.0.0.1", port: int = 8000, fmt: Optional[str] = None,
          max_rows: int = DEFAULT_MAX_ROWS, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
    """Serve ``artifact`` with uvicorn until interrupted (``unified serve``)."""
    _require("uvicorn")
    if not 0 <= port <= 65535:
        raise SpecError(f"must be 0..65535, got {port}", path="--port")
    _check_port(host, port)
    app = create_app(artifact, fmt=fmt, max_rows=max_rows, max_body_bytes=max_body_bytes)
    import uvicorn

    sys.stderr.write(f"unified serve: {artifact} on http://{host}:{port} (POST /predict, GET /health, GET /metadata)\n")
    sys.stderr.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SpecError(f"cannot resolve {host!r} ({e})", path="--host") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise SpecError(f"cannot listen on {host}:{port} ({e.strerror or e})", path="--port") from None
