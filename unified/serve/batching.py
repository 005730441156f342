"""Adaptive batching: concurrent requests gathered into one runtime call, results split back.

One worker task per server owns the runtime. A request that finds the runtime idle and nobody else
arriving runs at once (no hop through the worker, no wait). Otherwise it is queued; the worker takes every
queued request with the same sample shape, up to ``max_batch_size`` rows, and runs them as one call, so
under load batches grow by themselves (requests queue while the runtime is busy). Before a call it waits
for more only while other requests are already being read or parsed, and at most ``timeout_s`` after the
first was queued, and never longer than a runtime call takes on average (waiting longer costs more than
running the late ones in the next call; a model that answers in microseconds never waits). A request
larger than ``max_batch_size`` runs alone, never split. If a gathered call fails, each request is retried
alone so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from unified.export.runtimes import Runner

INLINE_SECONDS = 0.001  # runtime calls faster than this (moving average of the call itself) run on the event loop
INLINE_ELEMENTS = 16_384


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    queued: float


class Executor:
    """Runs a :class:`Runner` on the event loop when it is fast, else in a thread; records each call.

    Args:
        runner: the loaded artifact.
        observe: called with (rows, requests, seconds) after every runtime call (metrics).
        threads: worker threads for slow calls (1 when batching: one call at a time owns the cores).
    """

    def __init__(self, runner: Runner, observe: Callable[[int, int, float], None], threads: int) -> None:
        self.runner, self.observe = runner, observe
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="unified-serve-runtime")
        self._avg: Optional[float] = None

    async def run(self, x: np.ndarray, requests: int = 1) -> np.ndarray:
        """The runner's outputs for ``x`` (as many rows as ``x``)."""
        inline = (self.runner.lock is None and self._avg is not None and self._avg < INLINE_SECONDS
                  and x.size <= INLINE_ELEMENTS)
        if inline:
            out, took = self._timed(x)
        else:
            out, took = await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, x)
        self._avg = took if self._avg is None else 0.9 * self._avg + 0.1 * took
        self.observe(len(x), requests, took)
        out = out.reshape(len(x), -1) if out.ndim == 1 else out
        if len(out) != len(x):
            raise RuntimeError(f"the runtime returned {len(out)} rows for {len(x)}")
        return out

    @property
    def average_call_s(self) -> float:
        """Moving average of a runtime call's duration (0 before the first call)."""
        return self._avg or 0.0

    def _timed(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """The runtime call and its own duration (not the wait for a thread: that would keep slow-looking
        calls off the event loop forever)."""
        start = time.perf_counter()
        out = self.runner(x)
        return out, time.perf_counter() - start

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Batcher:
    """Gathers concurrent :meth:`infer` calls into runtime calls of at most ``max_batch_size`` rows.

    Args:
        executor: runs one batch.
        max_batch_size: most rows per gathered call (a larger request runs alone).
        timeout_s: longest wait for more requests after the first is queued.
    """

    def __init__(self, executor: Executor, max_batch_size: int, timeout_s: float) -> None:
        self.executor, self.max_batch_size, self.timeout_s = executor, max_batch_size, timeout_s
        self._queue: deque[_Pending] = deque()
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self.arriving = 0  # requests being read/parsed that will probably call infer soon
        self._busy = False  # a runtime call (direct or gathered) is under way

    def expect(self) -> None:
        """A request started that will probably call :meth:`infer` soon (worth waiting for)."""
        self.arriving += 1

    def expected_done(self) -> None:
        """That request submitted its batch or was refused."""
        self.arriving -= 1
        if self.arriving <= 0 and self._wakeup is not None:
            self._wakeup.set()

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """The outputs for ``x``, computed in a call shared with concurrent requests."""
        if not self._busy and not self._queue and self.arriving <= 0:
            # Alone: run now, without the hop through the worker; requests arriving meanwhile queue up.
            self._busy = True
            try:
                return await self.executor.run(x)
            finally:
                self._busy = False
                if self._queue and self._wakeup is not None:
                    self._wakeup.set()
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._work())
        future = loop.create_future()
        self._queue.append(_Pending(x, future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and not self._busy:  # a lone request's direct call wakes us when done
                self._busy = True
                try:
                    batch = await self._gather()
                    await self._run(batch)
                finally:
                    self._busy = False

    async def _gather(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch, rows = [first], len(first.x)
        # Waiting longer than a runtime call takes costs more than running this batch now and the late
        # requests in the next one: a model that answers in microseconds never waits.
        deadline = first.queued + min(self.timeout_s, self.executor.average_call_s)
        while rows < self.max_batch_size:
            rows = self._take(batch, rows)
            if rows >= self.max_batch_size or self.arriving <= 0:
                break
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            assert self._wakeup is not None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                self._take(batch, rows)
                break
        return batch

    def _take(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests of the batch's sample shape into it, in order, while they fit."""
        shape = batch[0].x.shape[1:]
        kept: list[_Pending] = []
        while self._queue and rows < self.max_batch_size:
            item = self._queue.popleft()
            if item.x.shape[1:] != shape:
                kept.append(item)
                continue
            if rows + len(item.x) > self.max_batch_size:
                kept.append(item)
                break
            batch.append(item)
            rows += len(item.x)
        self._queue.extendleft(reversed(kept))
        return rows

    async def _run(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a cancelled request is not computed
        if not live:
            return
        x = live[0].x if len(live) == 1 else np.concatenate([p.x for p in live])
        try:
            out = await self.executor.run(x, len(live))
        except Exception as e:  # noqa: BLE001 - delivered to the request(s) that caused it
            if len(live) == 1:
                _deliver(live[0].future, error=e)
                return
            for p in live:  # retry alone: one bad request does not fail the others
                try:
                    _deliver(p.future, await self.executor.run(p.x, 1))
                except Exception as e1:  # noqa: BLE001
                    _deliver(p.future, error=e1)
            return
        start = 0
        for p in live:
            _deliver(p.future, out[start:start + len(p.x)])
            start += len(p.x)

    def close(self) -> None:
        """Stop the worker (pending requests are cancelled)."""
        if self._task is not None:
            self._task.cancel()
        for p in self._queue:
            p.future.cancel()
        self._queue.clear()


def _deliver(future: asyncio.Future, value: Any = None, error: Optional[BaseException] = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
