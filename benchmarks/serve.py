"""`unified serve` latency and throughput against calling onnxruntime in-process.

Starts ``unified serve`` (uvicorn, one process) on 127.0.0.1 over an ONNX export, then ``--clients``
threads with keep-alive ``httpx`` clients POST ``/predict`` with ``--rows`` raw rows each, until
``--requests`` requests are answered or ``--seconds`` pass (bounded both ways). The baseline is the
same ONNX file in onnxruntime in this process (same threads, same rows, no HTTP/JSON). Reports p50/p99
latency and throughput of each and the overhead ratios.

    python benchmarks/serve.py                       # trains a tiny digits MLP and exports it first
    python benchmarks/serve.py --artifact RUN_DIR/export --clients 4 --rows 1 --requests 4000
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The floor: the same stack (uvicorn + FastAPI, httpx clients) answering a constant without any model.
_FLOOR_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
app = FastAPI()
@app.get("/health")
async def health():
    return {"status": "ok"}
@app.post("/predict")
async def predict(request: Request):
    await request.body()
    return JSONResponse({"outputs": [], "predictions": []})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _measure_server(cmd: list[str], url: str, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start: {proc.stderr.read().decode()[-1000:]}")
        local = threading.local()

        def http_call() -> None:
            client = getattr(local, "c", None)
            if client is None:
                client = local.c = httpx.Client(base_url=url, timeout=30)
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            if r.status_code != 200:
                raise SystemExit(f"/predict answered {r.status_code}: {r.text[:200]}")

        _drive(http_call, args.clients, min(200, args.requests), args.seconds)  # warm-up
        return _drive(http_call, args.clients, args.requests, args.seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _export(tmp: Path, backend: str) -> Path:
    from unified import UnifiedTrainer

    spec = {"name": "bench", "seed": 0,
            "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 64},
            "model": {"arch": "mlp", "hidden": [128]}, "trainer": {"max_epochs": 2, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx"]}}
    return UnifiedTrainer(spec, backend=backend).fit().run_dir / "export"


def _drive(call: Callable[[], None], clients: int, requests: int, seconds: float) -> dict[str, float]:
    """Run ``call`` from ``clients`` threads until ``requests`` are done or ``seconds`` pass."""
    lat: list[float] = []
    lock = threading.Lock()
    left = [requests]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < deadline:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            t = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return {"requests": len(lat), "wall_s": wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_rps": len(lat) / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="an export directory (default: train and export a digits MLP)")
    ap.add_argument("--backend", default=None, help="backend for the default model (default: first installed)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--requests", type=int, default=3000, help="requests per measurement (upper bound)")
    ap.add_argument("--seconds", type=float, default=30.0, help="time limit per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import onnxruntime as ort

    from unified.registry import installed_backends

    with tempfile.TemporaryDirectory() as d:
        export = Path(args.artifact) if args.artifact else _export(Path(d), args.backend or installed_backends()[0])
        manifest = json.loads((export / "manifest.json").read_text())
        width = manifest["input"]["shape"][1]
        x = np.random.default_rng(0).uniform(0, 16, size=(args.rows, width)).astype(np.float32)
        body = json.dumps({"inputs": x.tolist()}).encode()

        port = _free_port()
        served = _measure_server([sys.executable, "-m", "unified", "serve", str(export), "--port", str(port)],
                                 f"http://127.0.0.1:{port}", body, args)
        port = _free_port()
        floor = _measure_server([sys.executable, "-c", _FLOOR_APP, str(port)], f"http://127.0.0.1:{port}", body, args)

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(export / "model.onnx"), sess_options=opts,
                                       providers=["CPUExecutionProvider"])

        def ort_call() -> None:
            session.run(["outputs"], {"inputs": x})

        _drive(ort_call, args.clients, min(200, args.requests), args.seconds)
        direct = _drive(ort_call, args.clients, args.requests, args.seconds)

    report = {"clients": args.clients, "rows": args.rows, "served": served, "in_process": direct, "http_floor": floor,
              "p50_ratio": served["p50_ms"] / direct["p50_ms"], "p99_ratio": served["p99_ms"] / direct["p99_ms"],
              "throughput_ratio": direct["throughput_rps"] / served["throughput_rps"],
              "p50_vs_floor": served["p50_ms"] / floor["p50_ms"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.clients} clients, {args.rows} row(s) per request, model input width {width}")
    print("| path | requests | p50 ms | p99 ms | requests/s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (("unified serve (HTTP + JSON, onnxruntime)", served),
                    ("floor: empty FastAPI endpoint, same stack", floor), ("onnxruntime in-process", direct)):
        print(f"| {name} | {r['requests']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput_rps']:.0f} |")
    print(f"overhead: p50 x{report['p50_ratio']:.1f}, p99 x{report['p99_ratio']:.1f}, "
          f"throughput / {report['throughput_ratio']:.1f} vs onnxruntime in-process; "
          f"p50 x{report['p50_vs_floor']:.2f} vs the empty endpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
