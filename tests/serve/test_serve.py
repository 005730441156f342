"""`unified serve`: a real uvicorn server on 127.0.0.1 over an exported model, good and bad requests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")

from unified import UnifiedTrainer  # noqa: E402
from unified.cli import main  # noqa: E402
from unified.registry import installed_backends  # noqa: E402

MAX_ROWS, MAX_BODY = 50, 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "unified", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not come up")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A digits classifier (first installed backend, 1 epoch) exported to ONNX and served."""
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("serve")
    spec = {"name": "s", "seed": 0, "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2,
                                             "batch_size": 64},
            "model": {"arch": "mlp", "hidden": [16]}, "trainer": {"max_epochs": 1, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx", "torchscript"]}}
    trainer = UnifiedTrainer(spec, backend=installed_backends()[0])
    run_dir = trainer.fit().run_dir
    proc, url = _start([str(run_dir / "export"), "--max-rows", str(MAX_ROWS), "--max-body-bytes", str(MAX_BODY)])
    x = load_digits().data[:20].astype(np.float32)  # raw features
    yield {"url": url, "trainer": trainer, "x": x, "run_dir": run_dir, "proc": proc}
    _stop(proc)


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


def test_bare_onnx_file(served, tmp_path):
    """A .onnx file without its manifest is served (outputs only, width read off the graph)."""
    bare = tmp_path / "m.onnx"
    shutil.copy(served["run_dir"] / "export" / "model.onnx", bare)
    proc, url = _start([str(bare)])
    try:
        r = httpx.post(url + "/predict", json={"inputs": served["x"][:4].tolist()})
        assert r.status_code == 200
        out = np.array(r.json()["outputs"], dtype=np.float32)
        assert np.abs(out - served["trainer"].predict(served["x"][:4])).max() < 1e-4
        assert httpx.get(url + "/metadata").json()["input"]["shape"] == [None, 64]
        assert httpx.post(url + "/predict", json={"inputs": [[1.0, 2.0]]}).status_code == 422
    finally:
        _stop(proc)


def test_torchscript_artifact_served_by_torch(served):
    """--format picks another artifact of the manifest, run in its own runtime (torch.jit)."""
    pytest.importorskip("torch")
    proc, url = _start([str(served["run_dir"]), "--format", "torchscript"])
    try:
        assert httpx.get(url + "/health").json()["format"] == "torchscript"
        r = httpx.post(url + "/predict", json={"inputs": served["x"].tolist()})
        assert r.status_code == 200
        assert r.json()["predictions"] == served["trainer"].predict_labels(served["x"])
        assert httpx.post(url + "/predict", content=b"{").status_code == 400
    finally:
        _stop(proc)


def test_serve_bad_arguments_exit_2(served, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing"), "--port", str(_free_port())]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", str(_free_port())]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    port = int(served["url"].rsplit(":", 1)[1])  # taken by the running server
    assert main(["serve", str(served["run_dir"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(served["run_dir"]), "--format", "tflite", "--port", str(_free_port())]) == 2
    assert "has no 'tflite' artifact (it has: onnx, torchscript)" in capsys.readouterr().err
