"""Observability: Prometheus metrics (``GET /metrics``) and one access-log line per request.

Metrics live in the app's own ``CollectorRegistry`` (two servers in one process do not share counts):

* ``unified_serve_requests_total{route,method,status}``: requests answered; ``route`` is the route's
  template (``/v2/models/{model_name}/infer``), ``unmatched`` for unknown paths, so labels stay bounded.
* ``unified_serve_request_duration_seconds{route}``: time from the request's start to the last byte.
* ``unified_serve_batch_rows`` / ``unified_serve_batch_requests``: rows and requests per runtime call.
* ``unified_serve_inference_duration_seconds``: time in the runtime per call.
* ``unified_serve_model_load_seconds``: how long the runtime took to load the artifact.
* ``unified_serve_requests_in_progress``: requests being read or answered right now.
* ``unified_serve_model_info{model,format,runtime}``: 1.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
LOG_FORMATS = ("none", "text", "json")


class ServeMetrics:
    """The server's Prometheus collectors, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("unified_serve_requests", "HTTP requests answered, by route template, method and "
                                "status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("unified_serve_request_duration_seconds", "HTTP request latency (first byte in "
                                 "to last byte out)", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("unified_serve_batch_rows", "rows per runtime call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_requests = Histogram("unified_serve_batch_requests", "requests gathered into one runtime call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("unified_serve_inference_duration_seconds", "seconds per runtime call",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.load_time = Gauge("unified_serve_model_load_seconds", "seconds the runtime took to load the artifact",
                               registry=r)
        self.in_progress = Gauge("unified_serve_requests_in_progress", "HTTP requests being read or answered",
                                 registry=r)
        self.info = Gauge("unified_serve_model_info", "the served model", ["model", "format", "runtime"], registry=r)

    def observe_call(self, rows: int, requests: int, seconds: float) -> None:
        """Record one runtime call."""
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.inference.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of ``GET /metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def access_logger(fmt: str) -> Callable[[dict[str, Any]], None] | None:
    """A function writing one access-log line per request to stderr (``text`` or ``json``), or None."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if fmt == "none":
        return None
    log = logging.getLogger("unified.serve.access")
    log.propagate = False
    log.setLevel(logging.INFO)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    if fmt == "json":
        from unified.serve.tensors import dump_json

        return lambda rec: log.info(dump_json(rec).decode())
    return lambda rec: log.info(f'{rec["ts"]} {rec["client"]} "{rec["method"]} {rec["path"]}" {rec["status"]} '
                                f'{rec["duration_ms"]:.2f}ms {rec["bytes_out"]}B')


class ObserveMiddleware:
    """ASGI middleware: counts and times every HTTP request and writes its access-log line.

    Args:
        app: the wrapped ASGI app.
        metrics: where counts and latencies go.
        log: the access logger (None: no log).
    """

    def __init__(self, app: Any, metrics: ServeMetrics, log: Callable[[dict[str, Any]], None] | None) -> None:
        self.app, self.metrics, self.log = app, metrics, log
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "bytes": 0}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            took = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (route, scope["method"], state["status"])
            children = self._children.get(key)
            if children is None:  # label lookups take a lock: once per (route, method, status)
                children = self._children[key] = (self.metrics.requests.labels(route, key[1], str(key[2])),
                                                  self.metrics.latency.labels(route))
            children[0].inc()
            children[1].observe(took)
            if self.log is not None:
                client = scope.get("client") or ("-", 0)
                self.log({"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                          "client": f"{client[0]}:{client[1]}", "method": scope["method"], "path": scope["path"],
                          "query": scope.get("query_string", b"").decode("latin-1"), "route": route,
                          "status": state["status"], "duration_ms": round(took * 1000, 3),
                          "bytes_out": state["bytes"]})
