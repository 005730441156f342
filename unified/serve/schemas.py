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

TF_PREDICT = {"type": "object",
              "properties": {"signature_name": {"type": "string"},
                             "instances": {"type": "array", "description": "row format: one sample per item"},
                             "inputs": {"description": "columnar format: the batch, or {input name: batch}"}}}


def body(schema: dict[str, Any], errors: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``openapi_extra`` for a route with a JSON body ``schema`` and error answers ``{status: schema}``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {str(s): {"description": "refused", "content": {"application/json": {"schema": e}}}
                          for s, e in errors.items()}}


def answers(errors: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``openapi_extra`` for a route without a body that may answer ``{status: schema}``."""
    return {"responses": {str(s): {"description": "refused", "content": {"application/json": {"schema": e}}}
                          for s, e in errors.items()}}
