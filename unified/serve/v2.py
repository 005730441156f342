"""Open Inference Protocol v2 (KServe / NVIDIA Triton / Seldon MLServer) over HTTP/REST.

Routes: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}``
(model metadata), ``/v2/models/{name}/ready``, ``/v2/models/{name}/config`` (Triton's model configuration),
``POST /v2/models/{name}/infer``; each model route also under ``/v2/models/{name}/versions/1/...``.
Tensors travel as JSON (``data``, flat row-major or nested) or with Triton's binary tensor extension
(``Inference-Header-Content-Length``: a JSON header, then raw little-endian bytes), which is what
``tritonclient.http`` sends and asks for by default. Errors: ``{"error": "<one line>"}``, 400 for a bad
request, 404 for an unknown model or version, 413 for a body or batch over the limits.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime.

from math import prod
from typing import Any, Optional

import numpy as np

from unified.serve import schemas
from unified.serve.context import ServerContext, add_hot_route, json_response, refusal
from unified.serve.model import ServedModel
from unified.serve.tensors import BadRequest, finite_float32, kind, load_json, to_batch

EXPECTED = '{"inputs": [{"name": ..., "shape": [...], "datatype": "FP32", "data": [...]}]}'
HEADER = "inference-header-content-length"
DATATYPES = {"float32": ("FP32", "<f4"), "int64": ("INT64", "<i8")}  # input dtype -> (v2 datatype, wire dtype)


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs with datatype and shape (-1 for the batch axis)."""
    def dims(shape: tuple[Optional[int], ...]) -> list[int]:
        return [-1, *(-1 if d is None else d for d in shape)]

    return {"name": model.name, "versions": [model.version], "platform": model.platform,
            "inputs": [{"name": model.input_name, "datatype": DATATYPES[model.input_dtype][0],
                        "shape": dims(model.sample_shape)}],
            "outputs": [{"name": model.output_name, "datatype": "FP32", "shape": dims(model.output_shape)}]}


def parse_infer(body: bytes, header_length: Optional[str], model: ServedModel,
                max_rows: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The float32 batch of an infer request and what the reply needs (id, binary outputs), or 400/413."""
    json_part, raw = body, b""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise BadRequest(400, f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                                  f"body of {len(body)} bytes")
        json_part, raw = body[:int(header_length)], body[int(header_length):]
    doc = load_json(json_part, EXPECTED)
    if not isinstance(doc, dict):
        raise BadRequest(400, f"expected a JSON object {EXPECTED}, got a JSON {kind(doc)}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(400, f"'inputs' must be a non-empty list of tensors, got "
                              f"{'nothing' if inputs is None else 'a JSON ' + kind(inputs)}")
    if len(inputs) != 1:
        raise BadRequest(400, f"model '{model.name}' takes 1 input ('{model.input_name}'), got {len(inputs)}")
    x = _tensor(inputs[0], raw, model, max_rows, b"true" in json_part or b"false" in json_part)
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    binary = bool(params.get("binary_data_output", False))
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest(400, f"'outputs' must be a list of {{\"name\": ...}}, got a JSON {kind(outputs)}")
        for i, o in enumerate(outputs):
            name = o.get("name") if isinstance(o, dict) else None
            if name != model.output_name:
                raise BadRequest(400, f"outputs[{i}] asks for {name!r}; model '{model.name}' has one output "
                                      f"'{model.output_name}'")
            p = o.get("parameters")
            if isinstance(p, dict) and "binary_data" in p:
                binary = bool(p["binary_data"])
    request_id = doc.get("id")
    return x, {"id": request_id if isinstance(request_id, str) else None, "binary": binary}


def _tensor(t: Any, raw: bytes, model: ServedModel, max_rows: int, bools: bool) -> np.ndarray:
    where = "inputs[0]"
    if not isinstance(t, dict):
        raise BadRequest(400, f"{where} must be a tensor object {{name, shape, datatype, data}}, got a JSON {kind(t)}")
    name = t.get("name")
    if name != model.input_name:
        raise BadRequest(400, f"{where} is named {name!r}; model '{model.name}' takes '{model.input_name}'")
    datatype = t.get("datatype")
    want_type, wire = DATATYPES[model.input_dtype]
    if datatype != want_type:
        raise BadRequest(400, f"input '{name}' has datatype {datatype!r}; the model takes {want_type}")
    shape = t.get("shape")
    want = 1 + len(model.sample_shape)
    if (not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)):
        raise BadRequest(400, f"input '{name}' shape must be a list of non-negative integers, got {shape!r:.80}")
    if len(shape) != want or not all(w is None or w == d for w, d in zip(model.sample_shape, shape[1:])):
        expect = [-1, *(-1 if d is None else d for d in model.sample_shape)]
        raise BadRequest(400, f"input '{name}' has shape {shape}; the model takes {expect}")
    if shape[0] < 1:
        raise BadRequest(400, f"input '{name}' has a batch of 0; send at least one row")
    if shape[0] > max_rows:
        raise BadRequest(413, f"input '{name}' has {shape[0]} rows; this server takes at most {max_rows} per request")
    size = prod(shape)
    params = t.get("parameters") if isinstance(t.get("parameters"), dict) else {}
    nbytes = params.get("binary_data_size")
    if nbytes is not None:
        width = np.dtype(wire).itemsize
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes != size * width or len(raw) < nbytes:
            raise BadRequest(400, f"input '{name}' binary_data_size {nbytes!r} does not match shape {shape} of "
                                  f"{want_type} ({size * width} bytes) and the {len(raw)} bytes after the JSON header")
        x = np.frombuffer(raw[:nbytes], dtype=wire).reshape(shape)
        if model.input_dtype == "int64":
            return x.astype(np.int64)
        return _v2(lambda: finite_float32(x.astype(np.float32), f"input '{name}'"))
    if "data" not in t:
        raise BadRequest(400, f"input '{name}' has no 'data' (and no binary_data_size parameter)")
    data = t["data"]
    if isinstance(data, list) and data and isinstance(data[0], list):
        x = _v2(lambda: to_batch(data, tuple(shape[1:]), max_rows, where=f"input '{name}' data",
                                     booleans_possible=bools, dtype=model.input_dtype))
        if list(x.shape) != shape:
            raise BadRequest(400, f"input '{name}' data has shape {list(x.shape)}, its shape says {shape}")
        return x
    if not isinstance(data, list):
        raise BadRequest(400, f"input '{name}' data must be a list of numbers, got a JSON {kind(data)}")
    if len(data) != size:
        raise BadRequest(400, f"input '{name}' data has {len(data)} values; shape {shape} needs {size}")
    flat = _v2(lambda: to_batch(data, (), len(data), where=f"input '{name}' data", booleans_possible=bools,
                                dtype=model.input_dtype))
    return flat.reshape(shape)


def _v2(fn: Any) -> Any:
    """Run a tensor check; its 422 becomes the protocol's 400 (413 stays)."""
    try:
        return fn()
    except BadRequest as e:
        raise BadRequest(413 if e.status == 413 else 400, e.detail) from None


def infer_reply(model: ServedModel, outputs: np.ndarray, meta: dict[str, Any]) -> Any:
    """The infer response: JSON, or a JSON header + raw bytes when binary outputs were asked for."""
    out = np.ascontiguousarray(outputs, dtype="<f4")
    tensor: dict[str, Any] = {"name": model.output_name, "datatype": "FP32", "shape": list(out.shape)}
    reply: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": [tensor]}
    if meta["id"] is not None:
        reply["id"] = meta["id"]
    if not meta["binary"]:
        tensor["data"] = out.reshape(-1)
        return json_response(reply)
    from starlette.responses import Response

    from unified.serve.tensors import dump_json

    tensor["parameters"] = {"binary_data_size": out.nbytes}
    header = dump_json(reply)
    return Response(header + out.tobytes(), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def add_routes(app: Any, ctx: ServerContext) -> None:
    """Register the v2 routes on ``app``."""
    from fastapi import Request

    model = ctx.model
    err = {400: schemas.ERROR, 404: schemas.ERROR, 413: schemas.ERROR}
    not_found = schemas.answers({404: schemas.ERROR})

    def check(name: str, version: Optional[str] = None) -> Any:
        if name != model.name:
            return json_response({"error": f"unknown model '{name}'; this server serves '{model.name}'"}, 404)
        if version is not None and version != model.version:
            return json_response({"error": f"model '{name}' has no version '{version}' (it has '{model.version}')"}, 404)
        return None

    @app.get("/v2", tags=["v2"])
    async def v2_server_metadata() -> Any:
        from unified import __version__

        return json_response({"name": "unified-serve", "version": __version__,
                              "extensions": ["binary_tensor_data", "model_configuration"]})

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> Any:
        return json_response({"live": True})

    @app.get("/v2/health/ready", tags=["v2"])
    async def v2_ready() -> Any:
        return json_response({"ready": True})

    async def _metadata(model_name: str, version: Optional[str]) -> Any:
        return check(model_name, version) or json_response(model_metadata(model))

    async def _ready(model_name: str, version: Optional[str]) -> Any:
        return check(model_name, version) or json_response({"name": model.name, "ready": True})

    async def _config(model_name: str, version: Optional[str]) -> Any:
        bad = check(model_name, version)
        if bad is not None:
            return bad
        meta = model_metadata(model)
        cfg: dict[str, Any] = {
            "name": model.name, "platform": model.platform, "max_batch_size": ctx.max_rows,
            "input": [{"name": t["name"], "data_type": f"TYPE_{t['datatype']}", "dims": t["shape"][1:]}
                      for t in meta["inputs"]],
            "output": [{"name": t["name"], "data_type": "TYPE_FP32", "dims": t["shape"][1:]} for t in meta["outputs"]]}
        if ctx.max_batch_size > 1:
            cfg["dynamic_batching"] = {"max_queue_delay_microseconds": int(ctx.batch_timeout_ms * 1000),
                                       "max_batch_size": ctx.max_batch_size}
        return json_response(cfg)

    async def _infer(model_name: str, request: Request, version: Optional[str]) -> Any:
        bad = check(model_name, version)
        if bad is not None:
            return bad
        header = request.headers.get(HEADER)
        try:
            x, meta = await ctx.read(request, lambda b: parse_infer(b, header, model, ctx.max_rows))
        except BadRequest as e:
            return json_response({"error": e.detail}, 400 if e.status == 422 else e.status)
        try:
            out = await ctx.infer(x)
        except Exception as e:  # noqa: BLE001 - the runtime refused these inputs
            return json_response({"error": f"the model refused the inputs: {refusal(str(e) or type(e).__name__)}"},
                                 400)
        return infer_reply(model, out, meta)

    async def metadata(model_name: str) -> Any:
        return await _metadata(model_name, None)

    async def ready(model_name: str) -> Any:
        return await _ready(model_name, None)

    async def config(model_name: str) -> Any:
        return await _config(model_name, None)

    async def infer(model_name: str, request: Request) -> Any:
        return await _infer(model_name, request, None)

    async def infer_raw(request: Request) -> Any:
        params = request.path_params
        return await _infer(params["model_name"], request, params.get("model_version"))

    async def metadata_v(model_name: str, model_version: str) -> Any:
        return await _metadata(model_name, model_version)

    async def ready_v(model_name: str, model_version: str) -> Any:
        return await _ready(model_name, model_version)

    async def config_v(model_name: str, model_version: str) -> Any:
        return await _config(model_name, model_version)

    async def infer_v(model_name: str, model_version: str, request: Request) -> Any:
        return await _infer(model_name, request, model_version)

    infer_schema = schemas.v2_infer(model.input_name, model.output_name, model.sample_shape, ctx.max_rows,
                                    model.input_dtype)
    base, versioned = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"
    for prefix, (md, rd, cf, inf) in ((base, (metadata, ready, config, infer)),
                                      (versioned, (metadata_v, ready_v, config_v, infer_v))):
        app.add_api_route(prefix, md, methods=["GET"], tags=["v2"], openapi_extra=not_found)
        app.add_api_route(prefix + "/ready", rd, methods=["GET"], tags=["v2"], openapi_extra=not_found)
        app.add_api_route(prefix + "/config", cf, methods=["GET"], tags=["v2"], openapi_extra=not_found)
        add_hot_route(app, prefix + "/infer", infer_raw, inf, ["POST"], tags=["v2"],
                      openapi_extra=schemas.body(infer_schema, err))
