"""Worker processes that decode and augment upcoming batches ahead, in order (``data.num_workers``).

:class:`WorkerPool` runs self-contained jobs (a batch's part of a store plus everything needed to turn it
into model input: see :mod:`unified.data.fetch`) in ``num_workers`` processes and hands the results back in
submission order, at most ``2 * num_workers`` ahead. The processes start on first use (``spawn``: safe
whatever the parent loaded, TensorFlow and JAX threads included; ``UNIFIED_DATA_START_METHOD=fork`` starts
faster), ignore SIGINT (the parent handles Ctrl-C and shuts them down), exit when the parent dies, and are
shut down when the pool is closed or garbage-collected, or at exit. Every wait has a timeout
(``UNIFIED_DATA_TIMEOUT_S``, default 300 s): a stuck or dead worker is an error, never a hang.

Batches come back through shared memory, not the result pipe: each pass (:meth:`WorkerPool.imap` with
``slot_bytes``) maps one file in ``/dev/shm`` holding a slot per batch in flight; a worker writes its array
into the slot of its job and returns only the shape and dtype, and the caller copies it out. (Sending a
batch of images through the pipe costs more than decoding it.) The file is deleted when the pass ends.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import mmap
import os
import tempfile
import signal
import threading
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

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


_PREPARE_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Start worker processes without re-running the parent's ``__main__`` in them.

    ``spawn`` normally imports the main script again in each child; the jobs need only ``unified.data``,
    and a user's script without an ``if __name__ == "__main__":`` guard would train again in every worker.
    The children get everything else of ``spawn``'s preparation (``sys.path``, working directory).
    """
    from multiprocessing import spawn

    with _PREPARE_LOCK:
        original = spawn.get_preparation_data

        def prepare(name: str) -> dict[str, Any]:
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = prepare
        try:
            yield
        finally:
            spawn.get_preparation_data = original


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


# -- results through shared memory ----------------------------------------------------------------------
def _shm_dir() -> Optional[str]:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


_SWEPT = False


def _sweep_stale() -> None:
    """Delete slot files that killed runs left behind (their process is gone), once per process."""
    global _SWEPT
    if _SWEPT:
        return
    _SWEPT = True
    import glob

    for path in glob.glob(os.path.join(_shm_dir() or tempfile.gettempdir(), "unified-data-*")):
        try:
            pid = int(os.path.basename(path).split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


class _Slots:
    """A file of ``count`` slots of ``size`` bytes, mapped by the caller and (lazily) by each worker."""

    def __init__(self, count: int, size: int) -> None:
        _sweep_stale()
        self.count, self.size = int(count), int(size)
        fd, self.path = tempfile.mkstemp(prefix=f"unified-data-{os.getpid()}-", dir=_shm_dir())
        try:
            os.ftruncate(fd, self.count * self.size)
            self.map = mmap.mmap(fd, self.count * self.size)
        finally:
            os.close(fd)
        # deleted when the pass ends, else when this object goes, else at exit (a pass left suspended)
        self._finalizer = weakref.finalize(self, _remove_slots, self.map, self.path)

    def read(self, slot: int, shape: tuple, dtype: str) -> np.ndarray:
        """A copy of the array a worker wrote into ``slot`` (the slot is free again afterwards)."""
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        return np.frombuffer(self.map, dtype=dt, count=count, offset=slot * self.size).reshape(shape).copy()

    def close(self) -> None:
        self._finalizer()


def _remove_slots(map_: mmap.mmap, path: str) -> None:
    with contextlib.suppress(BufferError, ValueError):  # a view still alive: the OS frees it with the file
        map_.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


_WORKER_MAP: dict[str, mmap.mmap] = {}  # in a worker: the slots file of the current pass


def _run_in_slot(path: Optional[str], offset: int, size: int, fn: Callable[..., Any], *args: Any) -> Any:
    """In a worker: ``fn(*args)``; an array that fits is written to the slot, and only its layout returned."""
    out = fn(*args)
    if path is None or not isinstance(out, np.ndarray) or out.dtype.hasobject or out.nbytes > size:
        return ("value", out)
    mm = _WORKER_MAP.get(path)
    if mm is None:
        for old in _WORKER_MAP.values():
            with contextlib.suppress(BufferError, ValueError):
                old.close()
        _WORKER_MAP.clear()
        with open(path, "r+b") as f:
            mm = _WORKER_MAP[path] = mmap.mmap(f.fileno(), 0)
    np.frombuffer(mm, dtype=out.dtype, count=out.size, offset=offset).reshape(out.shape)[...] = out
    return ("slot", out.shape, out.dtype.str)


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

    def warm(self) -> None:
        """Start the processes now, without waiting for them (their start-up overlaps the caller's work)."""
        executor = self._start()
        for _ in range(self.num_workers):
            self._submit(executor, int, ())

    def imap(self, fn: Callable[..., Any], jobs: Iterable[tuple], ahead: Optional[int] = None,
             slot_bytes: int = 0) -> Iterator[Any]:
        """``fn(*job)`` for each job, run in the workers, yielded in order; at most ``ahead`` in flight.

        ``slot_bytes``: the largest array result expected; results up to that size come back through shared
        memory (0: through the pipe). Closing the iterator early (a run stopped mid-epoch) cancels the jobs
        not started yet.

        Raises:
            TrainingError: a worker died, or gave no result within :func:`timeout_s` seconds.
            Whatever ``fn`` raised (a DataError naming a corrupt file ...), re-raised here.
        """
        executor = self._start()
        ahead = max(1, int(ahead or 4 * self.num_workers))
        pending: collections.deque[tuple[int, Future]] = collections.deque()
        it = iter(jobs)
        timeout = timeout_s()
        slots = _Slots(ahead, slot_bytes) if slot_bytes > 0 else None
        submitted = 0
        try:
            while True:
                while len(pending) < ahead:  # job k uses slot k % ahead: job k - ahead was read out already
                    job = next(it, None)
                    if job is None:
                        break
                    slot = submitted % ahead
                    where = (slots.path, slot * slots.size, slots.size) if slots is not None else (None, 0, 0)
                    pending.append((slot, self._submit(executor, _run_in_slot, (*where, fn, *job))))
                    submitted += 1
                if not pending:
                    return
                slot, future = pending.popleft()
                kind, *rest = self._result(future, timeout)
                yield rest[0] if kind == "value" else slots.read(slot, *rest)  # type: ignore[union-attr]
        finally:
            for _, f in pending:
                f.cancel()
            if slots is not None:
                slots.close()

    def map(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> list[Any]:
        """Every ``fn(*job)``, in order (run ahead like :meth:`imap`)."""
        return list(self.imap(fn, jobs))

    def _submit(self, executor: ProcessPoolExecutor, fn: Callable[..., Any], job: tuple) -> Future:
        try:
            with _without_main():  # processes start on demand, inside submit
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
