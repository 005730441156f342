"""The FastAPI app: the native routes (``/predict``, ``/health``, ``/metadata``, ``/metrics``), the
protocols (:mod:`unified.serve.v2`, :mod:`unified.serve.tfserving`), and ``serve()`` under uvicorn."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime.

import socket
import sys
from pathlib import Path
from typing import Any, Optional, Union

from unified.errors import SpecError
from unified.serve import schemas
from unified.serve.context import ServerContext, add_hot_route, json_response, refusal
from unified.serve.metrics import LOG_FORMATS, ObserveMiddleware, ServeMetrics, access_logger
from unified.serve.images import decode_uploads, is_upload, parse_upload
from unified.serve.model import ServedModel, load_model, require
from unified.serve.tensors import DEFAULT_MAX_BODY, DEFAULT_MAX_ROWS, BadRequest, parse_inputs

DEFAULT_MAX_BATCH = 64
DEFAULT_BATCH_TIMEOUT_MS = 2.0


def create_app(artifact: Union[str, Path], *, fmt: Optional[str] = None, max_rows: int = DEFAULT_MAX_ROWS,
               max_body_bytes: int = DEFAULT_MAX_BODY, model_name: Optional[str] = None,
               max_batch_size: int = DEFAULT_MAX_BATCH, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
               log_format: str = "none") -> Any:
    """A FastAPI app serving ``artifact`` (loaded once, here; errors surface before serving).

    Args:
        artifact: an export directory, a run directory or an artifact file.
        fmt: which artifact of the manifest (default: onnx, else the first one).
        max_rows: most samples per request.
        max_body_bytes: largest request body.
        model_name: the name in ``/v2/models/{name}`` and ``/v1/models/{name}`` (default: the spec's name).
        max_batch_size: most rows gathered into one runtime call; 1 turns batching off.
        batch_timeout_ms: longest wait for concurrent requests to gather.
        log_format: ``none``, ``text`` or ``json``: one access-log line per request on stderr.

    Raises:
        SpecError: a bad argument, artifact or name (``unified serve`` exits 2).
        BackendUnavailableError: fastapi, prometheus-client, orjson or the runtime is missing.
    """
    check_limits(max_rows, max_body_bytes, max_batch_size, batch_timeout_ms, log_format)
    for module in ("fastapi", "prometheus_client", "orjson"):
        require(module)
    model = load_model(artifact, fmt, model_name)
    if model.image is not None:  # uploads: parsed by python-multipart, decoded by Pillow
        require("python_multipart")
        require("PIL", "images")
    return build_app(model, max_rows=max_rows, max_body_bytes=max_body_bytes, max_batch_size=max_batch_size,
                     batch_timeout_ms=batch_timeout_ms, log_format=log_format)


def check_limits(max_rows: int, max_body_bytes: int, max_batch_size: int, batch_timeout_ms: float,
                 log_format: str) -> None:
    """Refuse serving limits that cannot work, naming the flag (:class:`SpecError`)."""
    if max_rows < 1:
        raise SpecError(f"must be >= 1, got {max_rows}", path="--max-rows")
    if max_body_bytes < 64:
        raise SpecError(f"must be >= 64, got {max_body_bytes}", path="--max-body-bytes")
    if max_batch_size < 1:
        raise SpecError(f"must be >= 1 (1 turns batching off), got {max_batch_size}", path="--max-batch-size")
    if not 0 <= batch_timeout_ms <= 10_000:
        raise SpecError(f"must be 0..10000, got {batch_timeout_ms:g}", path="--batch-timeout-ms")
    if log_format not in LOG_FORMATS:
        raise SpecError(f"must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}", path="--log-format")


def build_app(model: ServedModel, *, max_rows: int = DEFAULT_MAX_ROWS, max_body_bytes: int = DEFAULT_MAX_BODY,
              max_batch_size: int = DEFAULT_MAX_BATCH, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
              log_format: str = "none") -> Any:
    """The app around an already loaded :class:`ServedModel` (see :func:`create_app`)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    from unified.serve import tfserving, v2

    metrics = ServeMetrics()
    metrics.load_time.set(model.load_time_s)
    metrics.info.labels(model.name, model.entry["format"], model.runner.runtime).set(1)
    ctx = ServerContext(model, max_rows, max_body_bytes, max_batch_size, batch_timeout_ms, metrics)
    meta = {**model.manifest, "serving": {
        "model_name": model.name, "format": model.entry["format"], "path": model.entry["path"],
        "runtime": model.runner.runtime, "max_rows": max_rows, "max_body_bytes": max_body_bytes,
        "max_batch_size": max_batch_size, "batch_timeout_ms": batch_timeout_ms,
        "load_time_s": round(model.load_time_s, 4),
        "image_upload": None if model.image is None else model.image.to_dict(),
        "protocols": {"predict": "/predict", "v2": f"/v2/models/{model.name}", "tfserving": f"/v1/models/{model.name}"}}}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        ctx.close()

    app = FastAPI(title="unified serve", version=_version(), docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", lifespan=lifespan,
                  description=f"Model '{model.name}' ({model.entry['format']}, {model.runner.runtime}): /predict, "
                              f"Open Inference Protocol v2, TensorFlow Serving REST, Prometheus /metrics.")
    app.state.ctx = ctx
    app.add_middleware(ObserveMiddleware, metrics=metrics, log=access_logger(log_format))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:  # the server keeps running
        return json_response({"detail": f"internal error: {type(exc).__name__}: {refusal(str(exc))}"}, 500)

    @app.get("/health", tags=["native"])
    async def health() -> Any:
        return json_response({"status": "ok", "format": model.entry["format"], "runtime": model.runner.runtime,
                              "model_name": model.name})

    @app.get("/metadata", tags=["native"])
    async def metadata() -> Any:
        return json_response(meta)

    @app.get("/metrics", tags=["native"])
    async def prometheus() -> Any:
        from starlette.responses import Response

        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    predict_doc = schemas.body(schemas.predict(model.sample_shape, max_rows, model.input_dtype),
                               {400: schemas.DETAIL, 413: schemas.DETAIL, 415: schemas.DETAIL, 422: schemas.DETAIL},
                               uploads=None if model.image is None else schemas.upload(max_rows, model.image.size,
                                                                                       model.image.channels))

    def read_images(request: Request, content_type: str) -> Any:
        image = model.image
        if image is None:
            raise BadRequest(415, f"this model takes JSON {{\"inputs\": [...]}} (Content-Type: application/json), "
                                  f"not {content_type.split(';')[0].strip()}: it was not trained on imagefolder: images")
        return ctx.read(request, lambda b: decode_uploads(parse_upload(b, content_type, max_rows), image), offload=True)

    async def predict(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        try:
            if is_upload(content_type):
                x = await read_images(request, content_type)
            else:
                x = await ctx.read(request, lambda b: parse_inputs(b, None, max_rows, model.sample_shape,
                                                                   model.input_dtype))
        except BadRequest as e:
            return json_response({"detail": e.detail}, e.status)
        try:
            outputs = await ctx.infer(x)
        except Exception as e:  # noqa: BLE001 - e.g. a bare ONNX file whose width was unknown
            return json_response({"detail": f"the model refused the inputs: {refusal(str(e) or type(e).__name__)}"},
                                 422)
        return json_response({"outputs": outputs, "predictions": model.predictions(outputs)})

    add_hot_route(app, "/predict", predict, predict, ["POST"], tags=["native"], openapi_extra=predict_doc)

    v2.add_routes(app, ctx)
    tfserving.add_routes(app, ctx)
    return app


def _version() -> str:
    from unified import __version__

    return __version__


def serve(artifact: Union[str, Path], *, host: str = "127.0.0.1", port: int = 8000, fmt: Optional[str] = None,
          max_rows: int = DEFAULT_MAX_ROWS, max_body_bytes: int = DEFAULT_MAX_BODY, model_name: Optional[str] = None,
          max_batch_size: int = DEFAULT_MAX_BATCH, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
          log_format: str = "none") -> None:
    """Serve ``artifact`` with uvicorn until interrupted (``unified serve``); arguments as :func:`create_app`."""
    require("uvicorn")
    if not 0 <= port <= 65535:
        raise SpecError(f"must be 0..65535, got {port}", path="--port")
    check_limits(max_rows, max_body_bytes, max_batch_size, batch_timeout_ms, log_format)
    check_port(host, port)
    app = create_app(artifact, fmt=fmt, max_rows=max_rows, max_body_bytes=max_body_bytes, model_name=model_name,
                     max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms, log_format=log_format)
    import uvicorn

    name = app.state.ctx.model.name
    batching = f"batching up to {max_batch_size} rows / {batch_timeout_ms:g} ms" if max_batch_size > 1 else "no batching"
    upload = " (JSON, or image files as multipart field 'file')" if app.state.ctx.model.image is not None else ""
    sys.stderr.write(f"unified serve: {artifact} as '{name}' on http://{host}:{port} ({batching}): POST /predict{upload}, "
                     f"/v2/models/{name}/infer, /v1/models/{name}:predict; GET /health, /metadata, /metrics\n")
    sys.stderr.flush()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)


def check_port(host: str, port: int) -> None:
    """:class:`SpecError` unless ``host:port`` can be listened on (checked before the model loads)."""
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
