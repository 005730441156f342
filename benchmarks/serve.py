"""`unified serve` latency and throughput: per protocol, with and without batching, against onnxruntime in-process.

Starts ``unified serve`` (uvicorn, one process) on 127.0.0.1 over an ONNX export, then ``--clients``
threads with keep-alive ``httpx`` clients POST ``--rows`` raw rows per request, until ``--requests``
requests are answered or ``--seconds`` pass (bounded both ways), in ``--rounds`` rounds interleaved
between the servers compared (a shared machine's load then hits each alike). Three reports:

* ``--protocols predict,v2,tfserving``: each protocol's p50/p99/throughput beside the floor (an empty
  FastAPI endpoint on the same stack, no model) and onnxruntime in-process on the same rows and threads.
* ``--compare-batching``: the same load with ``--max-batch-size 1`` (off) and with batching on.
* ``--check``: what the protocols answer against onnxruntime in-process (max abs diff): the real
  ``tritonclient.http`` client (binary and JSON tensors) and TF Serving's row and columnar formats (and,
  for a model trained on images, PNG uploads against the training decoder's pixels).

``--protocols upload`` (a model trained on images, e.g. ``--model digits-cnn``): ``--rows`` PNG files per
request as ``multipart/form-data`` field ``file``, decoded by the server.

    python benchmarks/serve.py                       # trains a tiny digits MLP and exports it first
    python benchmarks/serve.py --artifact RUN_DIR/export --clients 4 --rows 1 --protocols predict,v2,tfserving
    python benchmarks/serve.py --model mlp4096 --clients 16 --rows 1 --compare-batching   # a heavier model
    python benchmarks/serve.py --check
    python benchmarks/serve.py --model digits-cnn --protocols predict,upload --rows 8   # image uploads
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
from typing import Any, Callable

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
@app.post("/{path:path}")
async def predict(request: Request):
    await request.body()
    return JSONResponse({"outputs": [], "predictions": []})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


JSON = "application/json"


def _bodies(x: np.ndarray, name: str) -> dict[str, tuple[str, bytes, str]]:
    """protocol -> (path, body, content type) for the rows ``x`` (the shapes a curl user would send)."""
    v2 = {"inputs": [{"name": "inputs", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    bodies = {"predict": ("/predict", json.dumps({"inputs": x.tolist()}).encode(), JSON),
              "v2": (f"/v2/models/{name}/infer", json.dumps(v2).encode(), JSON),
              "tfserving": (f"/v1/models/{name}:predict", json.dumps({"instances": x.tolist()}).encode(), JSON)}
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):  # image samples [C, H, W]: the same pixels as PNG uploads
        body, content_type = _form(_pngs(x))
        bodies["upload"] = ("/predict", body, content_type)
    return bodies


def _pngs(x: np.ndarray) -> list[bytes]:
    """PNG files of the ``[n, C, H, W]`` images ``x`` in ``[0, 1]``."""
    import io

    from PIL import Image

    files = []
    for img in (np.clip(x, 0, 1) * 255).round().astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, "PNG")
        files.append(buf.getvalue())
    return files


def _form(files: list[bytes], boundary: str = "unified-bench-boundary") -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with every file in field ``file`` (what ``curl -F file=@x.png`` sends)."""
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + f + b"\r\n" for i, f in enumerate(files))
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class _Server:
    def __init__(self, cmd: list[str], url: str) -> None:
        import httpx

        self.url = url
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise SystemExit(f"server did not start: {self.proc.stderr.read().decode()[-1000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _serve(export: Path, *extra: str) -> _Server:
    port = _free_port()
    return _Server([sys.executable, "-m", "unified", "serve", str(export), "--port", str(port), *extra],
                   f"http://127.0.0.1:{port}")


def _floor() -> _Server:
    port = _free_port()
    return _Server([sys.executable, "-c", _FLOOR_APP, str(port)], f"http://127.0.0.1:{port}")


def _measure(targets: dict[str, tuple[str, str, bytes, str]],
             args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """label -> stats for ``targets`` (label -> (url, path, body, content type)), measured in ``args.rounds``
    interleaved rounds so that a shared machine's changing load hits every target alike."""
    import httpx

    def caller(url: str, path: str, body: bytes, content_type: str) -> Callable[[], None]:
        local = threading.local()

        def http_call() -> None:
            client = getattr(local, "c", None)
            if client is None:
                client = local.c = httpx.Client(base_url=url, timeout=60)
            r = client.post(path, content=body, headers={"content-type": content_type})
            if r.status_code != 200:
                raise SystemExit(f"{path} answered {r.status_code}: {r.text[:200]}")

        return http_call

    calls = {label: caller(*t) for label, t in targets.items()}
    for call in calls.values():
        _drive(call, args.clients, min(200, args.requests), args.seconds)  # warm-up
    lat: dict[str, list[float]] = {label: [] for label in targets}
    wall = dict.fromkeys(targets, 0.0)
    p50s: dict[str, list[float]] = {label: [] for label in targets}
    for _ in range(args.rounds):
        for label, call in calls.items():
            r = _drive(call, args.clients, args.requests // args.rounds, args.seconds / args.rounds)
            lat[label] += r["lat"]
            wall[label] += r["wall_s"]
            p50s[label].append(r["p50_ms"])
    return {label: {**_stats(lat[label], wall[label]), "round_p50_ms": p50s[label]} for label in targets}


def _round_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over rounds of p50(a) / p50(b) measured back to back (robust to a drifting machine load)."""
    return float(np.median(np.array(a["round_p50_ms"]) / np.array(b["round_p50_ms"])))


def _stats(lat: list[float], wall: float) -> dict[str, float]:
    ms = np.array(lat) * 1000
    return {"requests": len(lat), "wall_s": wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_rps": len(lat) / wall}


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
    return {**_stats(lat, wall), "lat": lat}


def _export(tmp: Path, backend: str) -> Path:
    from unified import UnifiedTrainer

    spec = {"name": "bench", "seed": 0,
            "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 64},
            "model": {"arch": "mlp", "hidden": [128]}, "trainer": {"max_epochs": 2, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx"]}}
    return UnifiedTrainer(spec, backend=backend).fit().run_dir / "export"


def build_mlp_export(out: Path, widths: list[int], name: str = "mlp") -> Path:
    """An ONNX MLP (Gemm + Relu, random weights) with a manifest, servable by ``unified serve``, no training."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "inputs"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], ["outputs" if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["batch", widths[0]])],
                              [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", widths[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, out / "model.onnx")
    manifest = {"manifest_version": 1, "task": "classification", "classes": list(range(widths[-1])),
                "input": {"name": "inputs", "shape": [None, widths[0]], "dtype": "float32"},
                "output": {"name": "outputs", "shape": [None, widths[-1]], "dtype": "float32", "predictions": "argmax"},
                "source": {"name": name},
                "artifacts": [{"format": "onnx", "path": "model.onnx", "input_name": "inputs", "output_name": "outputs"}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _session(export: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(export / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])


def _in_process(export: Path, x: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    session = _session(export)

    def ort_call() -> None:
        session.run(["outputs"], {"inputs": x})

    _drive(ort_call, args.clients, min(200, args.requests), args.seconds)
    r = _drive(ort_call, args.clients, args.requests, args.seconds)
    return _stats(r["lat"], r["wall_s"])


def _row(label: str, r: dict[str, float]) -> str:
    return f"| {label} | {r['requests']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput_rps']:.0f} |"


def run_protocols(export: Path, name: str, x: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Each protocol, the empty endpoint and onnxruntime in-process under the same load."""
    bodies = _bodies(x, name)
    with _serve(export, *args.serve_args) as server, _floor() as floor:
        targets = {proto: (server.url, *bodies[proto]) for proto in args.protocols}
        targets["floor"] = (floor.url, *bodies["predict"])
        report: dict[str, Any] = _measure(targets, args)
    report["in_process"] = _in_process(export, x, args)
    for proto in args.protocols:
        report[proto]["p50_vs_floor"] = report[proto]["p50_ms"] / report["floor"]["p50_ms"]
        report[proto]["p50_vs_floor_by_round"] = _round_ratio(report[proto], report["floor"])
    return report


def run_batching(export: Path, x: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """The same load with batching off (``--max-batch-size 1``) and on."""
    path, body, content_type = _bodies(x, "")["upload" if "upload" in args.protocols else "predict"]
    with _serve(export, "--max-batch-size", "1") as off, _serve(export, *args.serve_args) as on:
        report: dict[str, Any] = _measure({"off": (off.url, path, body, content_type),
                                           "on": (on.url, path, body, content_type)}, args)
        report["off"]["metrics"], report["on"]["metrics"] = _batch_stats(off.url), _batch_stats(on.url)
    report["throughput_ratio"] = report["on"]["throughput_rps"] / report["off"]["throughput_rps"]
    report["p50_ratio"] = report["on"]["p50_ms"] / report["off"]["p50_ms"]
    report["p50_ratio_by_round"] = _round_ratio(report["on"], report["off"])
    return report


def _batch_stats(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    stats: dict[str, float] = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name in ("unified_serve_batch_rows_sum", "unified_serve_batch_rows_count"):
                stats[s.name] = s.value
    calls = stats.get("unified_serve_batch_rows_count", 0)
    return {"runtime_calls": calls, "mean_rows_per_call": stats.get("unified_serve_batch_rows_sum", 0) / max(calls, 1)}


def run_check(export: Path, name: str, rows: int) -> dict[str, float]:
    """Max abs diff of each protocol's answer against onnxruntime in-process on the same rows."""
    import httpx
    import tritonclient.http as th

    x = _rows(export, rows, seed=1)
    session = _session(export)
    ref = session.run(["outputs"], {"inputs": x})[0]
    diffs: dict[str, float] = {}
    with _serve(export) as server:
        client = th.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
        for binary in (True, False):
            inp = th.InferInput("inputs", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = client.infer(name, [inp], outputs=[th.InferRequestedOutput("outputs", binary_data=binary)])
            diffs[f"tritonclient ({'binary' if binary else 'JSON'} tensors)"] = float(np.abs(out.as_numpy("outputs") - ref).max())
        client.close()
        url = f"{server.url}/v1/models/{name}:predict"
        row = httpx.post(url, json={"instances": x.tolist()}, timeout=60).json()["predictions"]
        col = httpx.post(url, json={"inputs": {"inputs": x.tolist()}}, timeout=60).json()["outputs"]
        diffs["TF Serving row format (instances)"] = float(np.abs(np.array(row, np.float32) - ref).max())
        diffs["TF Serving columnar format (inputs)"] = float(np.abs(np.array(col, np.float32) - ref).max())
        native = httpx.post(f"{server.url}/predict", json={"inputs": x.tolist()}, timeout=60).json()["outputs"]
        diffs["/predict"] = float(np.abs(np.array(native, np.float32) - ref).max())
        if x.ndim == 4:  # uploads: the answer for PNG files vs onnxruntime on the training decoder's pixels
            from unified.data.images import load_image

            files = _pngs(x)
            pixels = np.stack([load_image(f, size=x.shape[2:], channels=x.shape[1]) for f in files])
            body, content_type = _form(files)
            up = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": content_type},
                            timeout=60).json()["outputs"]
            want = session.run(["outputs"], {"inputs": pixels})[0]
            diffs["/predict image upload (multipart PNG)"] = float(np.abs(np.array(up, np.float32) - want).max())
    return diffs


def _sample_shape(export: Path) -> list[int]:
    return json.loads((export / "manifest.json").read_text())["input"]["shape"][1:]


def _rows(export: Path, rows: int, seed: int = 0) -> np.ndarray:
    """Random raw samples: digit-like features in [0, 16] for a table, pixels in [0, 1] for an image model."""
    shape = _sample_shape(export)
    high = 16.0 if len(shape) == 1 else 1.0
    return np.random.default_rng(seed).uniform(0, high, size=(rows, *shape)).astype(np.float32)


def _export_images(tmp: Path, backend: str) -> Path:
    """A small CNN on digits as 1x8x8 images in [0, 1], its run's preprocess.json given the ``image`` entry an
    ``imagefolder:`` run records (so the server takes uploads)."""
    from sklearn.datasets import load_digits

    from unified import UnifiedTrainer

    digits = load_digits()
    np.savez(tmp / "digits.npz", x=(digits.images / 16.0).astype(np.float32)[:, None], y=digits.target)
    spec = {"name": "bench-cnn", "seed": 0,
            "data": {"source": f"npz:{tmp / 'digits.npz'}", "standardize": True, "val_fraction": 0.2, "batch_size": 64},
            "model": {"arch": "cnn", "channels": [16, 32], "kernel_size": 3, "pool": 2, "hidden": [64]},
            "trainer": {"max_epochs": 2, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx"]}}
    run_dir = UnifiedTrainer(spec, backend=backend).fit().run_dir
    pre = json.loads((run_dir / "preprocess.json").read_text())
    pre["image"] = pre.get("image") or {"size": [8, 8], "channels": 1}
    (run_dir / "preprocess.json").write_text(json.dumps(pre))
    return run_dir / "export"


def _name(export: Path) -> str:
    from unified.serve.model import default_model_name

    return default_model_name(json.loads((export / "manifest.json").read_text()), export / "model.onnx")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="an export directory (default: see --model)")
    ap.add_argument("--model", choices=["digits", "mlp4096", "digits-cnn"], default="digits",
                    help="without --artifact: digits = train and export a digits MLP 64-128-10; mlp4096 = an ONNX "
                         "MLP 64-4096-4096-10 with random weights (a runtime call heavier than the HTTP floor); "
                         "digits-cnn = a CNN on 1x8x8 digit images that takes image uploads")
    ap.add_argument("--backend", default=None, help="backend for the digits model (default: first installed)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--requests", type=int, default=3000, help="requests per measurement (upper bound)")
    ap.add_argument("--seconds", type=float, default=30.0, help="time limit per measurement")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per measurement (shared machines)")
    ap.add_argument("--protocols", default="predict", help="comma list of predict, v2, tfserving, upload (images)")
    ap.add_argument("--compare-batching", action="store_true", help="batching off vs on instead of the protocols")
    ap.add_argument("--check", action="store_true", help="protocol answers vs onnxruntime in-process instead")
    ap.add_argument("--serve-args", default="", help="extra `unified serve` flags, e.g. '--max-batch-size 32'")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.protocols = [p for p in args.protocols.split(",") if p]
    args.serve_args = args.serve_args.split()

    from unified.registry import installed_backends

    with tempfile.TemporaryDirectory() as d:
        if args.artifact:
            export = Path(args.artifact)
        elif args.model == "mlp4096":
            export = build_mlp_export(Path(d) / "mlp4096", [64, 4096, 4096, 10], "mlp4096")
        elif args.model == "digits-cnn":
            export = _export_images(Path(d), args.backend or installed_backends()[0])
        else:
            export = _export(Path(d), args.backend or installed_backends()[0])
        name = _name(export)
        x = _rows(export, args.rows)
        if args.check:
            report: dict[str, Any] = {"max_abs_diff_vs_onnxruntime": run_check(export, name, max(args.rows, 64))}
        elif args.compare_batching:
            report = run_batching(export, x, args)
        else:
            report = run_protocols(export, name, x, args)
    report = {"clients": args.clients, "rows": args.rows, "model": str(args.artifact or args.model), **report}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.check:
        print(f"{max(args.rows, 64)} rows, model {report['model']} (sample shape {list(x.shape[1:])})")
        for k, v in report["max_abs_diff_vs_onnxruntime"].items():
            print(f"{k}: max abs diff vs onnxruntime in-process {v:.3g}")
        return 0
    print(f"{args.clients} clients, {args.rows} row(s) per request, model {report['model']} (sample shape "
          f"{list(x.shape[1:])})")
    print("| path | requests | p50 ms | p99 ms | requests/s |")
    print("|---|---:|---:|---:|---:|")
    if args.compare_batching:
        for label in ("off", "on"):
            r = report[label]
            print(_row(f"batching {label} ({r['metrics']['mean_rows_per_call']:.1f} rows per runtime call)", r))
        print(f"batching on / off: throughput x{report['throughput_ratio']:.2f}, p50 x{report['p50_ratio']:.2f} "
              f"(median of per-round p50 ratios x{report['p50_ratio_by_round']:.2f})")
        return 0
    for proto in args.protocols:
        print(_row(f"unified serve, {proto}", report[proto]))
    print(_row("floor: empty FastAPI endpoint, same stack", report["floor"]))
    print(_row("onnxruntime in-process", report["in_process"]))
    for proto in args.protocols:
        print(f"{proto}: p50 x{report[proto]['p50_vs_floor']:.2f} vs the empty endpoint (median of per-round "
              f"ratios x{report[proto]['p50_vs_floor_by_round']:.2f}), "
              f"x{report[proto]['p50_ms'] / report['in_process']['p50_ms']:.0f} vs onnxruntime in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
