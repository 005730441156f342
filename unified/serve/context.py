"""What every route shares: the model, the limits, the runtime path (batched or not), JSON responses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from unified.serve.batching import Batcher, Executor
from unified.serve.metrics import ServeMetrics
from unified.serve.model import ServedModel
from unified.serve.tensors import BadRequest, dump_json


@dataclass
class ServerContext:
    """One server's model, limits and runtime path.

    Attributes:
        model: the loaded artifact.
        max_rows: most samples per request.
        max_body_bytes: largest request body.
        max_batch_size: most rows per gathered runtime call (1: no batching).
        batch_timeout_ms: longest wait for more requests to gather.
        metrics: the Prometheus collectors.
    """

    model: ServedModel
    max_rows: int
    max_body_bytes: int
    max_batch_size: int
    batch_timeout_ms: float
    metrics: ServeMetrics
    executor: Executor = field(init=False)
    batcher: Optional[Batcher] = field(init=False, default=None)

    def __post_init__(self) -> None:
        batching = self.max_batch_size > 1
        self.executor = Executor(self.model.runner, self.metrics.observe_call, threads=1 if batching else 4)
        if batching:
            self.batcher = Batcher(self.executor, self.max_batch_size, self.batch_timeout_ms / 1000)

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for the float32 batch ``x`` (gathered with concurrent requests when batching)."""
        if self.batcher is not None:
            return await self.batcher.infer(x)
        return await self.executor.run(x)

    async def read(self, request: Any, parse: Callable[[bytes], Any], offload: bool = False) -> Any:
        """Read the body (within ``max_body_bytes``) and ``parse`` it, telling the batcher a request is coming.

        ``offload``: parse in a worker thread (image decoding), so the event loop keeps serving meanwhile.
        """
        if self.batcher is not None:
            self.batcher.expect()
        try:
            body = await self.read_body(request)
            if offload:
                return await asyncio.get_running_loop().run_in_executor(None, parse, body)
            return parse(body)
        finally:
            if self.batcher is not None:
                self.batcher.expected_done()

    async def read_body(self, request: Any) -> bytes:
        """The request body, or :class:`BadRequest` (413) past ``max_body_bytes``, without reading it all."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"body of {int(declared)} bytes is over the limit of {limit}")
        if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise BadRequest(415, f"Content-Encoding {request.headers['content-encoding']!r} is not supported; "
                                  f"send the body uncompressed")
        if declared is not None and declared.isdigit():  # within the limit: read it whole (one receive, usually)
            body = await request.body()
            if len(body) > limit:
                raise BadRequest(413, f"body is over the limit of {limit} bytes")
            return body
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(413, f"body is over the limit of {limit} bytes")
        return bytes(body)

    def close(self) -> None:
        """Stop the batcher and the runtime threads."""
        if self.batcher is not None:
            self.batcher.close()
        self.executor.close()


def json_response(doc: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Any:
    """A JSON response written by orjson (numpy arrays inside ``doc`` are serialized directly)."""
    from starlette.responses import Response

    return Response(dump_json(doc), status_code=status, media_type="application/json", headers=headers)


def add_hot_route(app: Any, path: str, endpoint: Callable[[Any], Any], documented: Callable[..., Any],
                  methods: list[str], **openapi: Any) -> None:
    """Serve ``path`` with ``endpoint(request)`` as a plain Starlette route, documented by ``documented``.

    FastAPI's per-request machinery (dependency solving, path-parameter validation) costs ~50 us a call,
    more than the rest of a one-row prediction; the prediction routes read and check their bodies
    themselves, so they skip it. ``documented`` (a FastAPI endpoint with the same path parameters) is
    registered right behind it, never matched, only for ``/openapi.json``.
    """
    from starlette.routing import Match, Route

    class HotRoute(Route):
        def matches(self, scope: Any) -> Any:
            match, child = super().matches(scope)
            if match != Match.NONE:
                child["route"] = self  # as FastAPI's routes do: metrics and logs label by the template
            return match, child

    app.add_api_route(path, documented, methods=methods, **openapi)
    app.router.routes.insert(len(app.router.routes) - 1, HotRoute(path, endpoint, methods=methods))


def refusal(message: str) -> str:
    """One line out of an exception's message."""
    text = str(message).strip()
    return text.splitlines()[0][:300] if text else "no reason given"
