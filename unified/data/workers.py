"""Worker processes that decode and augment upcoming batches ahead, in order (``data.num_workers``).

:class:`WorkerPool` runs self-contained jobs (a batch's part of a store plus everything needed to turn it
into model input: see :mod:`unified.data.fetch`) in ``num_workers`` processes and hands the results back in
submission order, at most ``2 * num_workers`` ahead. The processes start on first use (``spawn``: safe
whatever the parent loaded, TensorFlow and JAX threads included; ``UNIFIED_DATA_START_METHOD=fork`` starts
faster), ignore SIGINT (the parent handles Ctrl-C and shuts them down), exit when the parent dies, and are
shut down when the pool is closed or garbage-collected, or at exit. Every wait has a timeout
(``UNIFIED_DATA_TIMEOUT_S``, default 300 s): a stuck or dead worker is an error, never a hang.
"""

from __future__ import annotations

import atexit
import collections
import os
import signal
import threading
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional

from unified.errors import TrainingError

__all__ = ["WorkerPool", "timeout_s"]

_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def timeout_s() -> float:
    """Seconds to wait for one batch from a worker (``UNIFIED_DATA_TIMEOUT_S``, default 300)."""
    try:
        return max(1.0, float(os.environ.get("UNIFIED_DATA_TIMEOUT_S", "300")))
    except ValueError:
        return 300.0


def _start_method() -> str:
    return os.environ.get("UNIFIED_DATA_START_METHOD", "spawn")


def _worker_init(parent: int) -> None:
    """In each worker: leave Ctrl-C to the parent, and exit when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="unified-data-parent-watch", daemon=True).start()


def _shutdown(executor: ProcessPoolExecutor) -> None:
    procs = list((getattr(executor, "_processes", None) or {}).values())
    try:
        executor.shutdown(wait=False, cancel_futures=True)
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
    for proc in procs:
        try:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.terminate()
        except Exception:  # noqa: BLE001
            pass


class WorkerPool:
    """``num_workers`` processes running jobs in order, a bounded number ahead.

    Args:
        num_workers: processes (> 0).
    """

    def __init__(self, num_workers: int) -> None:
        if num_workers <= 0:
            raise ValueError(f"num_workers must be > 0, got {num_workers}")
        self.num_workers = int(num_workers)
        self._executor: Optional[ProcessPoolExecutor] = None
        self._finalizer: Optional[weakref.finalize] = None
        _POOLS.add(self)

    @property
    def started(self) -> bool:
        return self._executor is not None

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import multiprocessing

            ctx = multiprocessing.get_context(_start_method())
            self._executor = ProcessPoolExecutor(self.num_workers, mp_context=ctx, initializer=_worker_init,
                                                 initargs=(os.getpid(),))
            self._finalizer = weakref.finalize(self, _shutdown, self._executor)
        return self._executor

    def imap(self, fn: Callable[..., Any], jobs: Iterable[tuple], ahead: Optional[int] = None) -> Iterator[Any]:
        """``fn(*job)`` for each job, run in the workers, yielded in order; at most ``ahead`` in flight.

        Closing the iterator early (a run stopped mid-epoch) cancels the jobs not started yet.

        Raises:
            TrainingError: a worker died, or gave no result within :func:`timeout_s` seconds.
            Whatever ``fn`` raised (a DataError naming a corrupt file ...), re-raised here.
        """
        executor = self._start()
        ahead = max(1, int(ahead or 2 * self.num_workers))
        pending: collections.deque[Future] = collections.deque()
        it = iter(jobs)
        timeout = timeout_s()
        try:
            while True:
                while len(pending) < ahead:
                    job = next(it, None)
                    if job is None:
                        break
                    pending.append(self._submit(executor, fn, job))
                if not pending:
                    return
                yield self._result(pending.popleft(), timeout)
        finally:
            for f in pending:
                f.cancel()

    def map(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> list[Any]:
        """Every ``fn(*job)``, in order (run ahead like :meth:`imap`)."""
        return list(self.imap(fn, jobs))

    def _submit(self, executor: ProcessPoolExecutor, fn: Callable[..., Any], job: tuple) -> Future:
        try:
            return executor.submit(fn, *job)
        except (BrokenProcessPool, RuntimeError) as e:
            self._broken()
            raise TrainingError(f"data.num_workers: the worker processes stopped ({type(e).__name__}: {e})") from None

    def _result(self, future: Future, timeout: float) -> Any:
        import concurrent.futures

        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self._broken()
            raise TrainingError(f"data.num_workers: no batch from the worker processes in {timeout:.0f} s "
                                f"(UNIFIED_DATA_TIMEOUT_S); they were stopped") from None
        except BrokenProcessPool as e:
            self._broken()
            raise TrainingError(f"data.num_workers: a worker process died ({e}); a worker that runs out of memory "
                                f"is killed by the OS: lower data.num_workers or data.batch_size") from None

    def _broken(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (a new job starts them again)."""
        executor, self._executor = self._executor, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if executor is not None:
            _shutdown(executor)

    def __getstate__(self) -> dict[str, Any]:  # a Dataset copied to another process takes no processes along
        return {"num_workers": self.num_workers, "_executor": None, "_finalizer": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _POOLS.add(self)


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()
