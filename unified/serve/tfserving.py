"""TensorFlow Serving's REST API: model status, metadata and ``:predict`` (row and columnar formats).

Routes: ``GET /v1/models/{name}`` (version status), ``GET /v1/models/{name}/metadata`` (the
``serving_default`` signature), ``POST /v1/models/{name}:predict``; each also under
``/v1/models/{name}/versions/1``. A predict body holds either ``instances`` (row format: a list of samples,
or of ``{"<input name>": sample}`` objects), answered ``{"predictions": [...]}``, or ``inputs`` (columnar
format: the batch, or ``{"<input name>": batch}``), answered ``{"outputs": [...]}``. Errors are
``{"error": "<one line>"}``: 400 for a bad request, 404 for an unknown model or version, 413 past the limits.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime.

from typing import Any, Optional

import numpy as np

from unified.serve import schemas
from unified.serve.context import ServerContext, add_hot_route, json_response, refusal
from unified.serve.model import ServedModel
from unified.serve.tensors import BadRequest, kind, load_json, to_batch

EXPECTED = '{"instances": [...]} or {"inputs": [...]}'


def status(model: ServedModel) -> dict[str, Any]:
    """``GET /v1/models/{name}``: one available version."""
    return {"model_version_status": [{"version": model.version, "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata(model: ServedModel) -> dict[str, Any]:
    """``GET /v1/models/{name}/metadata``: the ``serving_default`` signature in TF Serving's JSON shape."""
    def info(name: str, shape: tuple[Optional[int], ...], dtype: str) -> dict[str, Any]:
        dims = [{"size": "-1", "name": ""}, *({"size": str(-1 if d is None else d), "name": ""} for d in shape)]
        return {"dtype": dtype, "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}

    in_dtype = "DT_INT64" if model.input_dtype == "int64" else "DT_FLOAT"
    signature = {"inputs": {model.input_name: info(model.input_name, model.sample_shape, in_dtype)},
                 "outputs": {model.output_name: info(model.output_name, model.output_shape, "DT_FLOAT")},
                 "method_name": "tensorflow/serving/predict"}
    return {"model_spec": {"name": model.name, "signature_name": "", "version": model.version},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}}}


def parse_predict(body: bytes, model: ServedModel, max_rows: int) -> tuple[np.ndarray, str]:
    """(float32 batch, ``"row"`` or ``"columnar"``) of a ``:predict`` body, or :class:`BadRequest`."""
    doc = load_json(body, EXPECTED)
    if not isinstance(doc, dict):
        raise BadRequest(400, f"expected a JSON object {EXPECTED}, got a JSON {kind(doc)}")
    signature = doc.get("signature_name", "serving_default")
    if signature not in ("serving_default", ""):
        raise BadRequest(400, f"signature_name {signature!r} is not served; the model has 'serving_default'")
    extra = [k for k in doc if k not in ("signature_name", "instances", "inputs")]
    if extra:
        raise BadRequest(400, f"unknown key {extra[0]!r}; the body takes 'instances' or 'inputs' (and 'signature_name')")
    if ("instances" in doc) == ("inputs" in doc):
        raise BadRequest(400, "the body must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    bools = b"true" in body or b"false" in body
    name = model.input_name
    if "instances" in doc:
        rows = doc["instances"]
        if isinstance(rows, list):
            named = [isinstance(r, dict) for r in rows]
            if any(named):
                if not all(named):
                    raise BadRequest(400, "instances mix named objects and plain values; use one form for all")
                for i, r in enumerate(rows):
                    if set(r) != {name}:
                        raise BadRequest(400, f"instances[{i}] has keys {sorted(r)}; the model's one input is {name!r}")
                rows = [r[name] for r in rows]
        return _tf(lambda: to_batch(rows, model.sample_shape, max_rows, where="instances", booleans_possible=bools,
                                    dtype=model.input_dtype)), "row"
    value = doc["inputs"]
    if isinstance(value, dict):
        if set(value) != {name}:
            raise BadRequest(400, f"inputs has keys {sorted(value)}; the model's one input is {name!r}")
        value = value[name]
    return _tf(lambda: to_batch(value, model.sample_shape, max_rows, where="inputs", booleans_possible=bools,
                                dtype=model.input_dtype)), "columnar"


def _tf(fn: Any) -> Any:
    try:
        return fn()
    except BadRequest as e:
        raise BadRequest(413 if e.status == 413 else 400, e.detail) from None


def add_routes(app: Any, ctx: ServerContext) -> None:
    """Register the TF Serving routes on ``app``."""
    from fastapi import Request

    model = ctx.model
    not_found = schemas.answers({404: schemas.ERROR})

    def check(name: str, version: Optional[str]) -> Any:
        if name != model.name:
            return json_response({"error": f"Servable not found for request: Latest({name}); this server serves "
                                           f"'{model.name}'"}, 404)
        if version is not None and version != model.version:
            return json_response({"error": f"Servable not found for request: Specific({name}, {version}); "
                                           f"model '{name}' has version {model.version}"}, 404)
        return None

    async def _predict(model_name: str, version: Optional[str], request: Request) -> Any:
        bad = check(model_name, version)
        if bad is not None:
            return bad
        try:
            x, form = await ctx.read(request, lambda b: parse_predict(b, model, ctx.max_rows))
        except BadRequest as e:
            return json_response({"error": e.detail}, 400 if e.status == 422 else e.status)
        try:
            out = await ctx.infer(x)
        except Exception as e:  # noqa: BLE001 - the runtime refused these inputs
            return json_response({"error": f"the model refused the inputs: {refusal(str(e) or type(e).__name__)}"},
                                 400)
        return json_response({"predictions": out} if form == "row" else {"outputs": out})

    async def model_status(model_name: str) -> Any:
        return check(model_name, None) or json_response(status(model))

    async def model_status_v(model_name: str, model_version: str) -> Any:
        return check(model_name, model_version) or json_response(status(model))

    async def model_metadata(model_name: str) -> Any:
        return check(model_name, None) or json_response(metadata(model))

    async def model_metadata_v(model_name: str, model_version: str) -> Any:
        return check(model_name, model_version) or json_response(metadata(model))

    async def predict(model_name: str, request: Request) -> Any:
        return await _predict(model_name, None, request)

    async def predict_v(model_name: str, model_version: str, request: Request) -> Any:
        return await _predict(model_name, model_version, request)

    async def other_verb(model_name_verb: str) -> Any:
        name, _, verb = model_name_verb.partition(":")
        why = " (classify and regress need a tf.Example signature)" if verb in ("classify", "regress") else ""
        return check(name, None) or json_response(
            {"error": f"'{verb or model_name_verb}' is not served; POST /v1/models/{model.name}:predict{why}"}, 400)

    body = schemas.body(schemas.tf_predict(model.input_name, model.sample_shape, ctx.max_rows, model.input_dtype),
                        {400: schemas.ERROR, 404: schemas.ERROR, 413: schemas.ERROR})
    base, versioned = "/v1/models/{model_name}", "/v1/models/{model_name}/versions/{model_version}"

    async def predict_raw(request: Request) -> Any:
        params = request.path_params
        return await _predict(params["model_name"], params.get("model_version"), request)

    add_hot_route(app, base + ":predict", predict_raw, predict, ["POST"], tags=["tfserving"], openapi_extra=body)
    add_hot_route(app, versioned + ":predict", predict_raw, predict_v, ["POST"], tags=["tfserving"], openapi_extra=body)
    app.add_api_route(base, model_status, methods=["GET"], tags=["tfserving"], openapi_extra=not_found)
    app.add_api_route(versioned, model_status_v, methods=["GET"], tags=["tfserving"], openapi_extra=not_found)
    app.add_api_route(base + "/metadata", model_metadata, methods=["GET"], tags=["tfserving"], openapi_extra=not_found)
    app.add_api_route(versioned + "/metadata", model_metadata_v, methods=["GET"], tags=["tfserving"],
                      openapi_extra=not_found)
    app.add_api_route("/v1/models/{model_name_verb}", other_verb, methods=["POST"], tags=["tfserving"],
                      include_in_schema=False)
