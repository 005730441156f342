"""OpenAPI fragments for the routes that read their bodies themselves (fast path, own one-line errors).

The handlers take the raw request (orjson straight to numpy); these schemas only describe the bodies in
``GET /openapi.json`` so clients and schema-driven fuzzers know what to send.
"""

from __future__ import annotations

from typing import Any

NUMBERS: dict[str, Any] = {"type": "array", "items": {}, "description": "nested lists of numbers, one sample per row"}
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}

PREDICT = {"type": "object", "required": ["inputs"], "additionalProperties": False,
           "properties": {"inputs": NUMBERS}}


def batch(sample_shape: tuple, max_rows: int, dtype: str = "float32") -> dict[str, Any]:
    """JSON schema of a batch of samples of ``sample_shape`` (``None``: any size) as nested lists."""
    schema: dict[str, Any] = {"type": "integer" if dtype == "int64" else "number"}
    for d in reversed(sample_shape):
        schema = {"type": "array", "items": schema, **({"minItems": d, "maxItems": d} if d is not None else {})}
    return {"type": "array", "items": schema, "minItems": 1, "maxItems": max_rows,
            "description": "raw features, one sample per row"}


def predict(sample_shape: tuple, max_rows: int, dtype: str = "float32") -> dict[str, Any]:
    """``POST /predict``'s body for this model."""
    return {**PREDICT, "properties": {"inputs": batch(sample_shape, max_rows, dtype)}}


def tf_predict(input_name: str, sample_shape: tuple, max_rows: int, dtype: str = "float32") -> dict[str, Any]:
    """``POST /v1/models/{name}:predict``'s body for this model (row or columnar format)."""
    rows = batch(sample_shape, max_rows, dtype)
    named_rows = {**rows, "items": {"type": "object", "required": [input_name], "additionalProperties": False,
                                    "properties": {input_name: rows["items"]}}}
    columns = {"type": "object", "required": [input_name], "additionalProperties": False,
               "properties": {input_name: rows}}
    return {"oneOf": [
        {"type": "object", "required": ["instances"], "additionalProperties": False,
         "properties": {"signature_name": {"type": "string", "enum": ["serving_default"]},
                        "instances": {"oneOf": [rows, named_rows]}}},
        {"type": "object", "required": ["inputs"], "additionalProperties": False,
         "properties": {"signature_name": {"type": "string", "enum": ["serving_default"]},
                        "inputs": {"oneOf": [rows, columns]}}}]}


def v2_infer(input_name: str, output_name: str, sample_shape: tuple, max_rows: int,
             dtype: str = "float32") -> dict[str, Any]:
    """``POST /v2/models/{name}/infer``'s JSON body for this model (flat ``data``)."""
    datatype, item = ("INT64", "integer") if dtype == "int64" else ("FP32", "number")
    tensor = {**V2_TENSOR, "properties": {**V2_TENSOR["properties"], "name": {"type": "string", "enum": [input_name]},
                                          "datatype": {"type": "string", "enum": [datatype]},
                                          "data": {"type": "array", "items": {"type": item}, "minItems": 1}},
              "required": ["name", "shape", "datatype", "data"]}
    outputs = {"type": "array", "items": {"type": "object", "required": ["name"],
                                          "properties": {"name": {"type": "string", "enum": [output_name]},
                                                         "parameters": {"type": "object"}}}}
    return {**V2_INFER, "properties": {**V2_INFER["properties"], "inputs": {"type": "array", "items": tensor,
                                                                             "minItems": 1, "maxItems": 1},
                                       "outputs": outputs}}

V2_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"],
             "properties": {"name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                            "datatype": {"type": "string", "enum": ["FP32", "FP64", "FP16", "INT64", "INT32",
                                                                   "INT16", "INT8", "UINT8", "BOOL", "BYTES"]},
                            "parameters": {"type": "object"},
                            "data": {"type": "array", "description": "row-major values, flat or nested"}}}
V2_INFER = {"type": "object", "required": ["inputs"],
            "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                           "inputs": {"type": "array", "items": V2_TENSOR},
                           "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                                  "properties": {"name": {"type": "string"},
                                                                                 "parameters": {"type": "object"}}}}}}


def upload(max_files: int, size: tuple, channels: int) -> dict[str, Any]:
    """``multipart/form-data`` body of image files in field ``file`` (a model trained on ``imagefolder:``)."""
    mode = {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    files = {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": max_files,
             "description": f"image files (PNG, JPEG, ...), one sample each, decoded like the training images: "
                            f"{mode}, resized to {size[0]}x{size[1]} (H x W), scaled to [0, 1]"}
    return {"schema": {"type": "object", "required": ["file"], "additionalProperties": False,
                       "properties": {"file": files}},
            "encoding": {"file": {"contentType": "image/png, image/jpeg, image/*, application/octet-stream"}}}


def body(schema: dict[str, Any], errors: dict[int, dict[str, Any]],
         uploads: "dict[str, Any] | None" = None) -> dict[str, Any]:
    """``openapi_extra`` for a route with a JSON body ``schema`` and error answers ``{status: schema}``.

    ``uploads``: the route also takes a ``multipart/form-data`` body (see :func:`upload`).
    """
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if uploads is not None:
        content["multipart/form-data"] = uploads
        for media in ("image/png", "image/jpeg"):  # one image as the raw body
            content[media] = {"schema": {"type": "string", "format": "binary", "description": "one image file"}}
    return {"requestBody": {"required": True, "content": content},
            "responses": {str(s): {"description": "refused", "content": {"application/json": {"schema": e}}}
                          for s, e in errors.items()}}


def answers(errors: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``openapi_extra`` for a route without a body that may answer ``{status: schema}``."""
    return {"responses": {str(s): {"description": "refused", "content": {"application/json": {"schema": e}}}
                          for s, e in errors.items()}}
