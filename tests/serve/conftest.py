"""One small exported model per session and real `unified serve` processes on free loopback ports.

Servers write stdout/stderr to files (an access log in a pipe nobody reads would block the server), come
up within a deadline or fail the test, and are always stopped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
pytest.importorskip("orjson")
pytest.importorskip("prometheus_client")

MAX_ROWS, MAX_BODY = 50, 64 * 1024
MODEL = "digits-small"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``python -m unified serve ...`` process; ``url``, ``log`` (its stderr), ``proc``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._err = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "unified", "serve", *args, "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=self._err)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._err.close()
                raise AssertionError(f"server exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("server did not come up within 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples in ``/metrics`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics", timeout=10).text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict:
    """A digits classifier (first installed backend, 1 epoch) exported to ONNX and TorchScript."""
    from sklearn.datasets import load_digits

    from unified import UnifiedTrainer
    from unified.registry import installed_backends

    tmp = tmp_path_factory.mktemp("serve")
    spec = {"name": MODEL, "seed": 0,
            "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 64},
            "model": {"arch": "mlp", "hidden": [16]}, "trainer": {"max_epochs": 1, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx", "torchscript"]}}
    trainer = UnifiedTrainer(spec, backend=installed_backends()[0])
    run_dir = trainer.fit().run_dir
    x = load_digits().data[:20].astype(np.float32)  # raw features
    return {"trainer": trainer, "run_dir": run_dir, "export": run_dir / "export", "x": x, "tmp": tmp}


@pytest.fixture(scope="session")
def reference(exported):
    """onnxruntime in-process on the served ONNX file: what every protocol must answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["export"] / "model.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["outputs"], {"inputs": np.asarray(x, dtype=np.float32)})[0]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory) -> Iterator:
    """``start_server(args)``: a running server, stopped at the end of the session (or by ``.stop()``)."""
    servers: list[Server] = []
    logs = tmp_path_factory.mktemp("serve-logs")

    def start(args: list[str]) -> Server:
        server = Server([str(a) for a in args], logs / f"server{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def served(exported, start_server) -> dict:
    """The ONNX export behind a server with small limits, batching on and a JSON access log."""
    server = start_server([exported["export"], "--max-rows", MAX_ROWS, "--max-body-bytes", MAX_BODY,
                           "--max-batch-size", 16, "--batch-timeout-ms", 200, "--log-format", "json"])
    return {**exported, "url": server.url, "proc": server.proc, "server": server, "name": MODEL}


@pytest.fixture(scope="session")
def port_finder():
    """``port_finder()``: a free loopback port."""
    return free_port
