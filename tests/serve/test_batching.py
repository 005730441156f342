"""Adaptive batching: the batcher alone (deterministic), then a server under concurrent clients."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from unified.export.runtimes import Runner
from unified.serve.batching import Batcher, Executor

httpx = pytest.importorskip("httpx")


def _recording_runner(lock: bool = False, fail_on: float | None = None) -> tuple[Runner, list[int]]:
    calls: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if fail_on is not None and (x == fail_on).any():
            raise ValueError("poisoned row")
        return x.sum(axis=1, keepdims=True) * np.ones((1, 3), np.float32)

    return Runner("test", "test", fn, lock=threading.Lock() if lock else None), calls


def _gather(batcher: Batcher, xs: list[np.ndarray]) -> list:
    """``xs`` as concurrent requests, the way the server announces them (expect, parse, infer)."""
    async def request(x: np.ndarray) -> np.ndarray:
        batcher.expected_done()
        return await batcher.infer(x)

    async def main() -> list:
        for _ in xs:
            batcher.expect()
        try:
            return await asyncio.wait_for(asyncio.gather(*(request(x) for x in xs), return_exceptions=True), 30)
        finally:
            batcher.close()

    return asyncio.run(main())


def test_a_lone_request_runs_at_once():
    runner, calls = _recording_runner()
    batcher = Batcher(Executor(runner, lambda *a: None, threads=1), 16, 5.0)  # a long timeout it must not wait for

    async def main() -> np.ndarray:
        try:
            return await asyncio.wait_for(batcher.infer(np.ones((2, 4), np.float32)), 2)
        finally:
            batcher.close()

    assert (asyncio.run(main()) == 4).all() and calls == [2]


@pytest.mark.parametrize("lock", [False, True], ids=["thread-safe-runtime", "serialized-runtime"])
def test_concurrent_requests_share_one_runtime_call_and_get_their_own_rows(lock):
    runner, calls = _recording_runner(lock)
    observed: list[tuple[int, int]] = []
    batcher = Batcher(Executor(runner, lambda r, n, s: observed.append((r, n)), threads=1), 16, 0.05)
    xs = [np.full((n, 4), i, np.float32) for i, n in enumerate([1, 3, 2, 1, 5])]
    outs = _gather(batcher, xs)
    assert calls == [12] and observed == [(12, 5)]
    for i, (x, out) in enumerate(zip(xs, outs)):
        assert out.shape == (len(x), 3) and (out == 4 * i).all()


def test_requests_arriving_while_the_runtime_is_busy_are_gathered():
    """A slow model (50 ms a call): the first request runs at once, the five behind it share the next call."""
    calls: list[int] = []

    def slow(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(0.05)
        return x[:, :1] * 2

    batcher = Batcher(Executor(Runner("test", "test", slow), lambda *a: None, threads=1), 16, 0.01)

    async def main() -> list:
        first = asyncio.ensure_future(batcher.infer(np.full((1, 3), 1.0, np.float32)))
        await asyncio.sleep(0.01)  # the first call is under way in its thread
        rest = [batcher.infer(np.full((1, 3), float(i), np.float32)) for i in range(2, 7)]
        try:
            return await asyncio.wait_for(asyncio.gather(first, *rest), 30)
        finally:
            batcher.close()

    outs = asyncio.run(main())
    assert calls == [1, 5] and [float(o[0, 0]) for o in outs] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_a_fast_model_does_not_wait_for_arriving_requests():
    runner, calls = _recording_runner()
    executor = Executor(runner, lambda *a: None, threads=1)
    batcher = Batcher(executor, 16, 5.0)  # 5 s allowed, but a call takes microseconds

    async def main() -> float:
        await executor.run(np.ones((1, 2), np.float32))  # the moving average learns the call is fast
        batcher.expect()  # someone is uploading, and never finishes
        start = time.perf_counter()
        await asyncio.wait_for(batcher.infer(np.ones((1, 2), np.float32)), 2)
        batcher.close()
        return time.perf_counter() - start

    assert asyncio.run(main()) < 1.0 and calls == [1, 1]


def test_batches_are_bounded_by_max_batch_size_and_never_split_a_request():
    runner, calls = _recording_runner()
    batcher = Batcher(Executor(runner, lambda *a: None, threads=1), 4, 0.05)
    xs = [np.ones((n, 2), np.float32) for n in (3, 1, 2, 6, 1)]
    outs = _gather(batcher, xs)
    assert calls == [4, 2, 6, 1]  # 3+1 fill a batch; 6 does not fit beside 2 and runs alone, unsplit
    assert [len(o) for o in outs] == [3, 1, 2, 6, 1]


def test_different_sample_shapes_are_not_mixed():
    runner, calls = _recording_runner()
    batcher = Batcher(Executor(runner, lambda *a: None, threads=1), 16, 0.05)
    outs = _gather(batcher, [np.ones((1, 2), np.float32), np.ones((1, 5), np.float32), np.ones((2, 2), np.float32)])
    assert sorted(calls) == [1, 3] and [o.shape for o in outs] == [(1, 3), (1, 3), (2, 3)]


def test_a_failing_request_does_not_fail_its_neighbours():
    runner, calls = _recording_runner(fail_on=7.0)
    batcher = Batcher(Executor(runner, lambda *a: None, threads=1), 16, 0.05)
    outs = _gather(batcher, [np.ones((1, 2), np.float32), np.full((1, 2), 7.0, np.float32), np.ones((2, 2), np.float32)])
    assert isinstance(outs[1], ValueError) and "poisoned" in str(outs[1])
    assert (outs[0] == 2).all() and (outs[2] == 2).all()
    assert calls[0] == 4  # tried together once, then one by one


def _fire(url: str, x: np.ndarray, clients: int) -> list[np.ndarray]:
    def one(i: int) -> np.ndarray:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/predict", json={"inputs": x[i:i + 1].tolist()})
            assert r.status_code == 200, r.text
            return np.array(r.json()["outputs"][0], np.float32)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(len(x))))


def test_server_under_concurrency_answers_each_request_once_and_correctly(served, reference):
    server = served["server"]
    rows0 = server.metric("unified_serve_batch_rows_sum")
    x = served["x"][:12]
    outs = np.stack(_fire(served["url"], x, 6))
    assert np.abs(outs - reference(x)).max() <= 1e-6
    assert server.metric("unified_serve_batch_rows_sum") - rows0 == 12  # every row computed exactly once


def test_max_batch_size_1_turns_batching_off(exported, start_server, reference):
    server = start_server([exported["export"], "--max-batch-size", "1"])
    try:
        x = exported["x"][:16]
        outs = np.stack(_fire(server.url, x, 8))
        assert np.abs(outs - reference(x)).max() <= 1e-6
        assert server.metric("unified_serve_batch_requests_count") == 16
        assert server.metric("unified_serve_batch_requests_bucket", le="1.0") == 16
        assert httpx.get(server.url + "/v2/models/digits-small/config").json().get("dynamic_batching") is None
    finally:
        server.stop()
