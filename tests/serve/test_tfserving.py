"""TensorFlow Serving REST against `unified serve`: plain HTTP in the shapes TF Serving documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")


def _url(served, suffix=""):
    return f"{served['url']}/v1/models/{served['name']}{suffix}"


def test_status_and_metadata(served):
    status = httpx.get(_url(served)).json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert httpx.get(_url(served, "/versions/1")).status_code == 200
    meta = httpx.get(_url(served, "/metadata")).json()
    assert meta["model_spec"] == {"name": served["name"], "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["inputs"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["inputs"]["tensor_shape"]["dim"]] == ["-1", "64"]
    assert [d["size"] for d in sig["outputs"]["outputs"]["tensor_shape"]["dim"]] == ["-1", "10"]


def test_row_format_matches_onnxruntime(served, reference):
    x = served["x"]
    for instances in (x.tolist(), [{"inputs": row} for row in x.tolist()]):
        r = httpx.post(_url(served, ":predict"), json={"signature_name": "serving_default", "instances": instances})
        assert r.status_code == 200, r.text
        assert list(r.json()) == ["predictions"]
        assert np.abs(np.array(r.json()["predictions"], np.float32) - reference(x)).max() <= 1e-6


def test_columnar_format_matches_onnxruntime(served, reference):
    x = served["x"][:5]
    for inputs in (x.tolist(), {"inputs": x.tolist()}):
        r = httpx.post(_url(served, "/versions/1:predict"), json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert list(r.json()) == ["outputs"]
        assert np.abs(np.array(r.json()["outputs"], np.float32) - reference(x)).max() <= 1e-6


ROW = [0.0] * 64
BAD = [
    ({"instances": [ROW], "inputs": [ROW]}, 400, "exactly one of 'instances'"),
    ({}, 400, "exactly one of 'instances'"),
    ({"instances": [ROW], "signature_name": "classify_x"}, 400, "signature_name 'classify_x' is not served"),
    ({"instances": [ROW], "examples": []}, 400, "unknown key 'examples'"),
    ({"instances": [ROW[:3]]}, 400, "each row must have 64 features, got 3"),
    ({"instances": [{"pixels": ROW}]}, 400, "the model's one input is 'inputs'"),
    ({"instances": [{"inputs": ROW}, ROW]}, 400, "mix named objects and plain values"),
    ({"instances": [["1"] * 64]}, 400, "instances[0][0] is a JSON string"),
    ({"inputs": {"inputs": [ROW], "other": [ROW]}}, 400, "the model's one input is 'inputs'"),
    ({"inputs": [ROW[:63] + [None]]}, 400, "inputs[0][63] is a JSON null"),
    ({"instances": []}, 400, "instances is empty"),
    ({"instances": [ROW] * 51}, 413, "at most 50 per request"),
]


@pytest.mark.parametrize("body,status,reason", BAD, ids=[f"{s}-{r[:24]}" for _, s, r in BAD])
def test_bad_predict_requests_get_one_line_errors(served, body, status, reason):
    r = httpx.post(_url(served, ":predict"), content=json.dumps(body))
    assert r.status_code == status, r.text
    assert reason in r.json()["error"] and "\n" not in r.json()["error"]


def test_unknown_model_version_and_verb(served):
    r = httpx.post(f"{served['url']}/v1/models/nope:predict", json={"instances": [ROW]})
    assert r.status_code == 404 and "Servable not found for request: Latest(nope)" in r.json()["error"]
    assert httpx.get(f"{served['url']}/v1/models/nope/metadata").status_code == 404
    assert httpx.get(_url(served, "/versions/3")).status_code == 404
    r = httpx.post(_url(served, ":classify"), json={"examples": []})
    assert r.status_code == 400 and "'classify' is not served" in r.json()["error"]
