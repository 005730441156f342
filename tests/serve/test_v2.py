"""Open Inference Protocol v2 against `unified serve`, through the real `tritonclient.http` client and curl-like JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
th = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def client(served):
    c = th.InferenceServerClient(served["url"].removeprefix("http://"), connection_timeout=30, network_timeout=30)
    yield c
    c.close()


def test_health_metadata_and_config(client, served):
    name = served["name"]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(name, "7")
    meta = client.get_model_metadata(name)
    assert meta["name"] == name and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "outputs", "datatype": "FP32", "shape": [-1, 10]}]
    config = client.get_model_config(name)
    assert config["input"][0]["dims"] == [64] and config["dynamic_batching"]["max_batch_size"] == 16
    assert client.get_server_metadata()["name"] == "unified-serve"


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_tritonclient_infer_matches_onnxruntime(client, served, reference, binary):
    x = served["x"]
    inp = th.InferInput("inputs", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("outputs", binary_data=binary)
    result = client.infer(served["name"], [inp], outputs=[out], request_id="r-1")
    got = result.as_numpy("outputs")
    assert got.shape == (20, 10) and got.dtype == np.float32
    assert np.abs(got - reference(x)).max() <= 1e-6
    assert result.get_response()["id"] == "r-1"
    default = client.infer(served["name"], [inp], model_version="1")  # no outputs named: all, as binary
    assert np.array_equal(default.as_numpy("outputs"), got)


def test_tritonclient_errors_are_exceptions_with_the_reason(client, served):
    x = served["x"][:2]
    wrong_width = th.InferInput("inputs", [2, 3], "FP32")
    wrong_width.set_data_from_numpy(x[:, :3].copy())
    wrong_type = th.InferInput("inputs", [2, 64], "INT64")
    wrong_type.set_data_from_numpy(x.astype(np.int64))
    wrong_name = th.InferInput("pixels", [2, 64], "FP32")
    wrong_name.set_data_from_numpy(x)
    good = th.InferInput("inputs", [2, 64], "FP32")
    good.set_data_from_numpy(x)
    cases = [(served["name"], wrong_width, "400", "has shape [2, 3]; the model takes [-1, 64]"),
             (served["name"], wrong_type, "400", "has datatype 'INT64'; the model takes FP32"),
             (served["name"], wrong_name, "400", "is named 'pixels'; model 'digits-small' takes 'inputs'"),
             ("no-such-model", good, "404", "unknown model 'no-such-model'")]
    for name, inp, status, reason in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer(name, [inp])
        assert e.value.status() == status and reason in e.value.message()
    assert client.is_server_live()


def _infer(served, body, **kw):
    return httpx.post(f"{served['url']}/v2/models/{served['name']}/infer", content=body, timeout=30, **kw)


def test_curl_json_flat_and_nested_data(served, reference):
    x = served["x"][:3]
    for data in (x.reshape(-1).tolist(), x.tolist()):
        body = json.dumps({"inputs": [{"name": "inputs", "shape": [3, 64], "datatype": "FP32", "data": data}]})
        r = _infer(served, body)
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert out["name"] == "outputs" and out["shape"] == [3, 10] and out["datatype"] == "FP32"
        assert np.abs(np.array(out["data"], np.float32).reshape(3, 10) - reference(x)).max() <= 1e-6


ROW = [0.0] * 64
T = {"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}
BAD = [
    (b"{", 400, "not valid JSON"),
    (b"[]", 400, "expected a JSON object"),
    (b'{"inputs": []}', 400, "'inputs' must be a non-empty list"),
    (json.dumps({"inputs": [T, T]}), 400, "takes 1 input ('inputs'), got 2"),
    (json.dumps({"inputs": [{**T, "shape": [1, -64]}]}), 400, "shape must be a list of non-negative integers"),
    (json.dumps({"inputs": [{**T, "shape": [0, 64], "data": []}]}), 400, "a batch of 0"),
    (json.dumps({"inputs": [{**T, "shape": [2, 64]}]}), 400, "data has 64 values; shape [2, 64] needs 128"),
    (json.dumps({"inputs": [{**T, "data": ["a"] * 64}]}), 400, "is a JSON string"),
    (json.dumps({"inputs": [{**T, "data": ROW[:63] + [None]}]}), 400, "data[63] is a JSON null"),
    (json.dumps({"inputs": [{**T, "data": ROW[:63] + [True]}]}), 400, "data[63] is a boolean"),
    (json.dumps({"inputs": [{**T, "data": [1e300] * 64}]}), 400, "is not a finite float32"),
    (json.dumps({"inputs": [{k: v for k, v in T.items() if k != "data"}]}), 400, "has no 'data'"),
    (json.dumps({"inputs": [T], "outputs": [{"name": "probs"}]}), 400, "asks for 'probs'"),
    (json.dumps({"inputs": [{**T, "shape": [51, 64], "data": ROW * 51}]}), 413, "at most 50 per request"),
]


@pytest.mark.parametrize("body,status,reason", BAD, ids=[f"{s}-{r[:24]}" for _, s, r in BAD])
def test_bad_infer_requests_get_one_line_errors(served, body, status, reason):
    r = _infer(served, body)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"] and "\n" not in r.json()["error"]


def test_binary_header_that_does_not_fit_is_a_400(served):
    r = _infer(served, b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    header = json.dumps({"inputs": [{**{k: v for k, v in T.items() if k != "data"},
                                     "parameters": {"binary_data_size": 100}}]}).encode()
    r = _infer(served, header + b"\0" * 100, headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "binary_data_size 100 does not match" in r.json()["error"]
