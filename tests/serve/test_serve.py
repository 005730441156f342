"""`unified serve` native API (/predict, /health, /metadata): a real server over an exported model, good and bad requests."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")

from unified.cli import main  # noqa: E402

MAX_ROWS, MAX_BODY = 50, 64 * 1024  # the `served` fixture's limits (conftest.py)


def test_predict_matches_the_trained_model(served):
    r = httpx.post(served["url"] + "/predict", json={"inputs": served["x"].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    outputs = np.array(body["outputs"], dtype=np.float32)
    assert outputs.shape == (20, 10)
    assert np.abs(outputs - served["trainer"].predict(served["x"])).max() < 1e-4
    assert body["predictions"] == served["trainer"].predict_labels(served["x"])


def test_health_and_metadata(served):
    assert httpx.get(served["url"] + "/health").json()["status"] == "ok"
    meta = httpx.get(served["url"] + "/metadata").json()
    classes = json.loads((served["run_dir"] / "classes.json").read_text())
    assert meta["classes"] == classes and meta["task"] == "classification"
    assert meta["input"]["shape"] == [None, 64] and meta["output"]["shape"] == [None, 10]
    assert meta["serving"]["format"] == "onnx" and meta["serving"]["max_rows"] == MAX_ROWS


ROW = [0.0] * 64
BAD = [
    (b"this is not json", 400, "not valid JSON"),
    (b"", 400, "empty body"),
    (b"[" * 20000 + b"]" * 20000, 400, "nested too deeply"),
    (b"[[1, 2]]", 422, "expected a JSON object"),
    (b'{"rows": []}', 422, "missing key 'inputs'"),
    (json.dumps({"inputs": [ROW], "extra": 1}).encode(), 422, "unknown key 'extra'"),
    (b'{"inputs": "abc"}', 422, "inputs must be a list of rows"),
    (b'{"inputs": []}', 422, "inputs is empty"),
    (json.dumps({"inputs": ROW[:3]}).encode(), 422, "inputs[0] is a JSON number"),
    (json.dumps({"inputs": [[1.0, 2.0, 3.0]]}).encode(), 422, "each row must have 64 features, got 3"),
    (json.dumps({"inputs": [ROW, ROW[:10]]}).encode(), 422, "inputs[1] has 10 values, expected 64"),
    (json.dumps({"inputs": [["x"] + ROW[1:]]}).encode(), 422, "inputs[0][0] is a JSON string"),
    (json.dumps({"inputs": [ROW[:5] + [None] + ROW[6:]]}).encode(), 422, "inputs[0][5] is a JSON null"),
    (json.dumps({"inputs": [ROW[:63] + [True]]}).encode(), 422, "inputs[0][63] is a boolean"),
    (b'{"inputs": [[NaN' + b", 0" * 63 + b"]]}", 422, "inputs hold NaN"),
    (b'{"inputs": [[1e999' + b", 0" * 63 + b"]]}", 422, "inputs[0][0] = inf is not a finite float32"),
    (json.dumps({"inputs": [[1e300] * 64]}).encode(), 422, "is not a finite float32"),
    (json.dumps({"inputs": [[1] * 64] * (MAX_ROWS + 1)}).encode(), 413, f"at most {MAX_ROWS} per request"),
    (b'{"inputs": [' + b"1," * MAX_BODY + b"1]}", 413, f"over the limit of {MAX_BODY}"),
]


@pytest.mark.parametrize("body,status,detail", BAD, ids=[f"{s}-{d[:24]}" for _, s, d in BAD])
def test_bad_requests_are_refused_with_a_message(served, body, status, detail):
    r = httpx.post(served["url"] + "/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]


def test_server_survives_concurrent_good_and_bad_requests(served):
    good = json.dumps({"inputs": served["x"][:3].tolist()}).encode()
    bodies = [good, b"{", json.dumps({"inputs": [[1, 2]]}).encode(), b'{"inputs": [[NaN]]}'] * 10

    def send(body: bytes) -> int:
        with httpx.Client(base_url=served["url"], timeout=30) as c:
            return c.post("/predict", content=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, bodies))
    assert codes.count(200) == 10 and codes.count(400) == 10 and codes.count(422) == 20
    assert served["proc"].poll() is None
    assert httpx.get(served["url"] + "/health").json()["status"] == "ok"
    r = httpx.post(served["url"] + "/predict", content=good)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def test_bare_onnx_file(served, tmp_path, start_server):
    """A .onnx file without its manifest is served (outputs only, width read off the graph)."""
    bare = tmp_path / "m.onnx"
    shutil.copy(served["run_dir"] / "export" / "model.onnx", bare)
    server = start_server([bare])
    url = server.url
    try:
        r = httpx.post(url + "/predict", json={"inputs": served["x"][:4].tolist()})
        assert r.status_code == 200
        out = np.array(r.json()["outputs"], dtype=np.float32)
        assert np.abs(out - served["trainer"].predict(served["x"][:4])).max() < 1e-4
        assert httpx.get(url + "/metadata").json()["input"]["shape"] == [None, 64]
        assert httpx.post(url + "/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 422
    finally:
        server.stop()


def test_torchscript_artifact_served_by_torch(served, start_server):
    """--format picks another artifact of the manifest, run in its own runtime (torch.jit), batched too."""
    pytest.importorskip("torch")
    server = start_server([served["run_dir"], "--format", "torchscript", "--max-batch-size", "8"])
    url = server.url
    try:
        assert httpx.get(url + "/health").json()["format"] == "torchscript"
        r = httpx.post(url + "/predict", json={"inputs": served["x"].tolist()})
        assert r.status_code == 200
        assert r.json()["predictions"] == served["trainer"].predict_labels(served["x"])
        assert httpx.post(url + "/predict", content=b"{").status_code == 400

        def one(i: int) -> list:
            with httpx.Client(base_url=url, timeout=30) as c:
                return c.post("/predict", json={"inputs": served["x"][i:i + 1].tolist()}).json()["outputs"]

        with ThreadPoolExecutor(8) as pool:
            outs = np.array([o[0] for o in pool.map(one, range(16))], dtype=np.float32)
        assert np.abs(outs - served["trainer"].predict(served["x"][:16])).max() < 1e-4
    finally:
        server.stop()


def test_serve_bad_arguments_exit_2(served, tmp_path, capsys, port_finder):
    assert main(["serve", str(tmp_path / "missing"), "--port", str(port_finder())]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", str(port_finder())]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    port = int(served["url"].rsplit(":", 1)[1])  # taken by the running server
    assert main(["serve", str(served["run_dir"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(served["run_dir"]), "--format", "tflite", "--port", str(port_finder())]) == 2
    assert "has no 'tflite' artifact (it has: onnx, torchscript)" in capsys.readouterr().err
    for flag, value, reason in (("--max-batch-size", "0", "must be >= 1 (1 turns batching off)"),
                                ("--batch-timeout-ms", "-1", "must be 0..10000"),
                                ("--model-name", "a/b", "is not a usable model name")):
        assert main(["serve", str(served["run_dir"]), flag, value, "--port", str(port_finder())]) == 2
        err = capsys.readouterr().err
        assert flag in err and reason in err, err
