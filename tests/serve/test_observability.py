"""GET /metrics (Prometheus exposition) and the one-line JSON access log."""

from __future__ import annotations

import json
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")


def test_metrics_count_requests_by_route_and_status(served):
    server = served["server"]
    route = "/v2/models/{model_name}/infer"
    ok0 = server.metric("unified_serve_requests_total", route=route, status="200")
    bad0 = server.metric("unified_serve_requests_total", route=route, status="400")
    body = {"inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    for _ in range(3):
        assert httpx.post(f"{served['url']}/v2/models/{served['name']}/infer", json=body).status_code == 200
    assert httpx.post(f"{served['url']}/v2/models/{served['name']}/infer", content=b"{").status_code == 400
    assert httpx.get(f"{served['url']}/no/such/path").status_code == 404
    assert server.metric("unified_serve_requests_total", route=route, status="200") - ok0 == 3
    assert server.metric("unified_serve_requests_total", route=route, status="400") - bad0 == 1
    assert server.metric("unified_serve_requests_total", route="unmatched", status="404") >= 1
    assert server.metric("unified_serve_request_duration_seconds_count", route=route) >= 4


def test_metrics_exposition_has_every_family(served):
    r = httpx.get(served["url"] + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for family in ("unified_serve_requests_total", "unified_serve_request_duration_seconds_bucket",
                   "unified_serve_batch_rows_bucket", "unified_serve_batch_requests_bucket",
                   "unified_serve_inference_duration_seconds_bucket", "unified_serve_model_load_seconds",
                   "unified_serve_model_info"):
        assert family in r.text, family
    assert served["server"].metric("unified_serve_model_load_seconds") > 0
    assert served["server"].metric("unified_serve_model_info", model=served["name"], format="onnx") == 1


def test_json_access_log_has_one_line_per_request(served):
    marker = f"/predict?probe={time.time_ns()}"
    assert httpx.post(served["url"] + marker, content=b"{").status_code == 400
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline and not lines:
        lines = [json.loads(line) for line in served["server"].log.read_text().splitlines()
                 if line.startswith("{") and marker.split("=")[1] in line]
        time.sleep(0.05)
    assert len(lines) == 1
    (rec,) = lines
    assert rec["method"] == "POST" and rec["path"] == "/predict" and rec["route"] == "/predict"
    assert rec["status"] == 400 and rec["duration_ms"] > 0 and rec["client"].startswith("127.0.0.1:")
    assert set(rec) >= {"ts", "query", "bytes_out"}


def test_openapi_schema_lists_every_protocol(served):
    paths = httpx.get(served["url"] + "/openapi.json").json()["paths"]
    for p in ("/predict", "/health", "/metadata", "/metrics", "/v2/health/live", "/v2/health/ready",
              "/v2/models/{model_name}", "/v2/models/{model_name}/ready", "/v2/models/{model_name}/infer",
              "/v1/models/{model_name}", "/v1/models/{model_name}/metadata", "/v1/models/{model_name}:predict"):
        assert p in paths, p
    assert "requestBody" in paths["/v2/models/{model_name}/infer"]["post"]
