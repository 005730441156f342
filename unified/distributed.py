"""Multi-process training: who this process is, and starting the processes of one machine.

The torch backends join the process group from torchrun's standard environment variables (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), whoever set them:

* ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m unified run ...``
  (several machines, or one) sets them for every process;
* otherwise, with ``trainer.devices: N > 1`` on one machine, :func:`launch` starts the N ranks with
  torch's own elastic launcher (``torch.distributed.launcher.api.elastic_launch``, what torchrun runs):
  its agent watches every rank, tears the whole group down as soon as one fails, forwards SIGINT/SIGTERM
  and kills what does not stop. The command itself only launches and reports: rank 0 trains and writes
  the run directory, the other ranks write into throw-away temporary directories.

Every rank gets the exact resolved spec (its YAML text; a rank checks that it re-validates to the very
same text), the same backend and variant, and, from Python, the ``fit(model=, data=)`` arguments and
extra callbacks (pickled: they must be importable, as for any ``multiprocessing`` spawn).

Nothing waits forever: the rendezvous and every collective time out after :func:`timeout_s` seconds
(``UNIFIED_DDP_TIMEOUT``, default 120); a rank that got SIGINT/SIGTERM but is stuck in a collective (so
Python never runs its handler) exits on its own after :func:`grace_s` seconds (``UNIFIED_DDP_SIGNAL_GRACE``,
default 5), see :func:`arm_watchdog`; the launcher's agent kills any rank still alive 2 s later.

Framework-free at import; :func:`launch` imports torch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

WORKER_FLAG = "UNIFIED_DDP_WORKER"  # set in the ranks :func:`launch` starts
REPORT_DIR = "UNIFIED_DDP_REPORT_DIR"  # where a rank started by :func:`launch` leaves its one-line outcome
TIMEOUT_ENV = "UNIFIED_DDP_TIMEOUT"
GRACE_ENV = "UNIFIED_DDP_SIGNAL_GRACE"
START_ENV = "UNIFIED_DDP_START_METHOD"  # fork (default on Linux) or spawn
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_GRACE_S = 5.0


@dataclass(frozen=True)
class World:
    """This process's place in the job. ``world_size == 1``: a single process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env(env: Optional[dict[str, str]] = None) -> World:
    """The :class:`World` described by torchrun-style variables (a single process when they are absent)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return World()
    return World(rank=int(env.get("RANK", "0")), local_rank=int(env.get("LOCAL_RANK", "0")),
                 world_size=int(env["WORLD_SIZE"]), node_rank=int(env.get("GROUP_RANK", env.get("NODE_RANK", "0"))))


def wanted_world_size(spec: Any) -> int:
    return int(spec.trainer.devices) * int(spec.trainer.num_nodes)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        from unified.errors import SpecError

        raise SpecError(f"environment variable {name}: expected a number of seconds > 0, got {raw!r}")
    return value


def timeout_s() -> float:
    """Seconds the rendezvous and each collective may wait (``UNIFIED_DDP_TIMEOUT``, default 120)."""
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def grace_s() -> float:
    """Seconds a rank has, after SIGINT/SIGTERM, before it exits without a checkpoint (``UNIFIED_DDP_SIGNAL_GRACE``)."""
    return _seconds(GRACE_ENV, DEFAULT_GRACE_S)


def start_method(on_gpu: bool = False) -> str:
    """How :func:`launch` starts the ranks (``UNIFIED_DDP_START_METHOD``).

    ``fork`` (the default on Linux for CPU runs): a rank is a copy of the launching process, with torch and
    the backend already imported (half the start-up time of ``spawn`` here) and ``fit(model=, data=)`` shared
    as they are; PyTorch re-initialises its CPU thread pool in a forked child. ``spawn`` (elsewhere, and for
    GPU runs, ``on_gpu``: CUDA cannot be used in a forked child once the parent has touched it, and the
    launcher counted the GPUs): a fresh interpreter, so the arguments are pickled and a script needs the
    ``if __name__ == "__main__":`` guard.
    """
    default = "fork" if sys.platform.startswith("linux") and not on_gpu else "spawn"
    method = os.environ.get(START_ENV, "").strip() or default
    if method not in ("fork", "spawn"):
        from unified.errors import SpecError

        raise SpecError(f"environment variable {START_ENV}: expected fork or spawn, got {method!r}")
    return method


# -- a rank stuck in a collective still ends after a signal -----------------------------------------------
_WATCHDOG: Optional[tuple[Any, Any]] = None


def arm_watchdog() -> None:
    """Make SIGINT/SIGTERM end this rank within :func:`grace_s` seconds, even inside a blocking collective.

    Python runs a signal handler only when the main thread returns to the interpreter; a rank blocked in a
    gloo/NCCL wait for a peer that never comes would never act on the facade's interrupt flag. The C-level
    handler still writes the signal number to the *wakeup fd*; a daemon thread reads it, waits the grace
    period (a healthy rank checkpoints and exits at its next batch boundary well before) and then ends the
    process with ``128 + signum``. Main thread only; idempotent; a no-op elsewhere.
    """
    global _WATCHDOG
    if _WATCHDOG is not None or threading.current_thread() is not threading.main_thread():
        return
    import socket

    grace = grace_s()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # pragma: no cover - not the main thread of the main interpreter
        reader.close()
        writer.close()
        return
    _WATCHDOG = (reader, writer)

    def watch() -> None:
        while True:
            try:
                data = reader.recv(1)
            except OSError:  # pragma: no cover
                return
            if not data:
                return
            signum = data[0]
            if signum in (signal.SIGINT, signal.SIGTERM):
                break
        time.sleep(grace)
        name = signal.Signals(signum).name
        rank = os.environ.get("RANK", "?")
        message = (f"rank {rank} got {name} but was still running {grace:g} s later (blocked in a collective "
                   f"waiting for another rank?); it stopped without a checkpoint")
        _write_report(rank, {"kind": "Interrupted", "signum": int(signum), "message": message}, overwrite=False)
        try:
            sys.stderr.write(f"unified: {message}\n")
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)

    threading.Thread(target=watch, name="unified-signal-watchdog", daemon=True).start()


def _write_report(rank: Any, report: dict[str, Any], overwrite: bool = True) -> None:
    """Leave this rank's outcome where :func:`launch` reads it (only in ranks it started)."""
    where = os.environ.get(REPORT_DIR)
    if not where:
        return
    path = Path(where) / f"rank{rank}.json"
    if path.exists() and not overwrite:
        return
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(report))
        os.replace(tmp, path)
    except OSError:  # pragma: no cover - the launcher reports the exit code instead
        pass


def _read_reports(where: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for p in where.glob("rank*.json"):
        try:
            out[int(p.stem[4:])] = json.loads(p.read_text())
        except (ValueError, OSError):
            continue
    return out


# -- one rank (the process the launcher starts) --------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    if isinstance(error, KeyboardInterrupt):
        return line or "interrupted"
    from unified.errors import UnifiedError

    if isinstance(error, UnifiedError):
        return line or type(error).__name__
    return f"{type(error).__name__}: {line}".rstrip(": ")


def _outcome(error: BaseException) -> tuple[int, dict[str, Any]]:
    """(exit code, report) of a rank that raised ``error``: the codes of the ``unified`` command."""
    from unified.errors import BackendUnavailableError, NotSupportedError, SpecError

    if isinstance(error, KeyboardInterrupt):
        signum = int(getattr(error, "signum", signal.SIGINT))
        return 128 + signum, {"kind": "Interrupted", "signum": signum, "message": _one_line(error)}
    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else 1
        return code or 1, {"kind": "SystemExit", "message": f"exited with code {code}"}
    if isinstance(error, (SpecError, NotSupportedError, BackendUnavailableError)):
        kind = "NotSupportedError" if isinstance(error, NotSupportedError) else "SpecError"
        return 2, {"kind": kind, "message": _one_line(error)}
    line = _one_line(error)
    if line.startswith("training failed: "):  # the launcher says it once, with the run directory
        line = line[len("training failed: "):]
    line = re.sub(r" \(run directory: [^()]*\)$", "", line)
    return 1, {"kind": "TrainingError", "message": line, "peer_lost": any(m in line for m in _PEER_LOST)}


# What a collective raises when another rank died: a symptom; the launcher names the rank that died.
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "DistNetworkError")


_EXIT_CODE = 0


def _exit_now() -> None:
    """The rank's last act (atexit): flush and leave. Its files are written and closed by then; finalizing an
    interpreter that imported torch takes seconds on a busy machine, and the launcher waits for it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(_EXIT_CODE)


def _rank_main(payload: dict[str, Any]) -> Any:
    """The entrypoint of every rank :func:`launch` starts (torch's elastic agent sets the environment)."""
    global _EXIT_CODE
    import atexit

    os.environ[WORKER_FLAG] = "1"
    os.environ[REPORT_DIR] = payload["report_dir"]
    if threading.current_thread() is threading.main_thread():  # forked: not the launcher's agent handlers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    atexit.register(_exit_now)  # registered first, so it runs after every other atexit handler
    world = world_from_env()
    try:
        arm_watchdog()
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: the ranks share the machine's cores
            import torch

            torch.set_num_threads(max(1, payload["cores"] // max(1, world.world_size)))
        from unified.errors import SpecError
        from unified.spec import Spec
        from unified.trainer import UnifiedTrainer

        text = payload["spec"]
        trainer = UnifiedTrainer(Spec.from_yaml(text), backend=payload["backend"],
                                 run_dir=payload["run_dir"] if world.is_zero else None,
                                 callbacks=payload["callbacks"])
        trainer.spec_source, trainer.base_dir = payload["spec_source"], payload["base_dir"]
        if trainer.spec.to_yaml() != text:  # the exact spec, or nothing
            raise SpecError(f"rank {world.rank}: the resolved spec handed over does not re-validate to the same spec; "
                            f"please report this (launch with torchrun meanwhile)")
        result = trainer.fit(payload["model"], payload["data"], resume=payload["resume"])
    except BaseException as e:  # noqa: BLE001 - reported to the launcher, then the exit code says it
        _EXIT_CODE, report = _outcome(e)
        _write_report(world.rank, report)
        if report.get("peer_lost"):  # give the agent a moment to see the rank that died first
            time.sleep(1.0)
        raise SystemExit(_EXIT_CODE) from None
    _write_report(world.rank, {"kind": "ok", "status": result.status})
    return result if world.is_zero else None


# -- the launcher --------------------------------------------------------------------------------------------
def _quiet_torch_logs() -> dict[str, int]:
    """Silence the agent's own log lines (the facade reports the outcome in one line); returns the old levels."""
    import logging

    old: dict[str, int] = {}
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.launcher")):
            lg = logging.getLogger(name)
            old[name] = lg.level
            lg.setLevel(logging.CRITICAL + 1)
    return old


def _checked_pickle(what: dict[str, Any]) -> None:
    import pickle

    for name, obj in what.items():
        if obj is None or obj == []:
            continue
        try:
            pickle.dumps(obj)
        except Exception as e:  # noqa: BLE001 - any pickling failure is the same advice
            from unified.errors import SpecError

            raise SpecError(f"trainer.devices > 1: {name} is handed to every process by pickling, and it cannot be "
                            f"pickled ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                            f"define it at module level, or start the processes yourself with torchrun "
                            f"(docs/scaling.md)", path="trainer.devices") from None


def _settle_summary(run_dir: Path, status: str, error: str, override: bool) -> None:
    """Make ``summary.json`` tell the outcome when rank 0 could not (killed) or did not know it (another rank failed)."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if summary.get("status") == "running" or override:
        from unified.files import atomic_write_json

        summary["status"] = status
        summary["error"] = error
        atomic_write_json(path, summary)


def _failure(failures: dict[int, Any], reports: dict[int, dict[str, Any]],
             world_size: int) -> tuple[int, dict[str, Any]]:
    """The rank whose failure ended the job, and its report (made from the exit code when it left none)."""
    def code_of(rank: int) -> int:
        return int(getattr(failures.get(rank), "exitcode", 1) or 1)

    def made(rank: int) -> dict[str, Any]:
        code = code_of(rank)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return {"kind": "killed", "message": f"killed by {name}"}
        return {"kind": "exit", "message": f"exited with code {code} without an error message (os._exit or a crash)"}

    ranks = sorted(failures) or sorted(r for r, rep in reports.items() if rep.get("kind") != "ok")
    # A rank that failed on its own comes before one that was stopped because of it (a signal from the
    # agent, or a collective that lost its peer).
    own = [r for r in ranks if reports.get(r, {}).get("kind") != "Interrupted" and not reports.get(r, {}).get("peer_lost")]
    if not own:
        causes = [r for r, rep in sorted(reports.items())
                  if rep.get("kind") not in ("ok", "Interrupted") and not rep.get("peer_lost")]
        silent = [r for r in range(world_size) if r not in reports]
        if causes:
            return causes[0], reports[causes[0]]
        if silent:
            return silent[0], {"kind": "exit", "message": "ended without an error message (killed, os._exit or a crash)"}
    rank = (own or ranks or [0])[0]
    return rank, reports.get(rank) or made(rank)


def launch(trainer: Any, model: Any = None, data: Any = None, resume: Any = None) -> Any:
    """Train ``trainer``'s spec on ``trainer.devices`` processes of this machine; returns rank 0's FitResult.

    Raises what a single-process ``fit()`` raises: ``SpecError``/``NotSupportedError`` (a rank refused its
    input), ``TrainingError`` naming the failing rank and its one-line error, ``Interrupted`` (exit
    130/143 in the ``unified`` command) after SIGINT/SIGTERM.
    """
    import shutil
    import tempfile
    import uuid

    import torch.distributed.elastic.rendezvous.c10d_rendezvous_backend  # noqa: F401 - loggers exist before quieting
    import torch.distributed.elastic.rendezvous.dynamic_rendezvous  # noqa: F401
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from unified import trainer as facade
    from unified.errors import Interrupted, NotSupportedError, SpecError, TrainingError

    from unified.registry import load_adapter

    spec = trainer.spec
    n = int(spec.trainer.devices)
    timeout, grace = timeout_s(), grace_s()
    method = start_method(load_adapter(trainer.backend).select_placement(spec).on_gpu)
    if method == "spawn":
        _checked_pickle({"fit(model=...)": model, "fit(data=...)": data, "callbacks=[...]": trainer.extra_callbacks})
    if trainer.run_dir is not None:
        run_dir, created = Path(trainer.run_dir), False
    elif resume is not None and Path(resume).is_dir():
        run_dir, created = Path(resume), False  # continued in place
    else:  # the facade's own naming, decided here so the launcher knows where rank 0 writes
        run_dir, created = facade.new_run_dir(spec.logging.dir, spec.name, trainer.backend), True
    run_dir = run_dir.absolute()
    trainer.run_dir = run_dir
    trainer.world = World(rank=0, local_rank=0, world_size=n)
    work = Path(tempfile.mkdtemp(prefix="unified-ddp-"))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    payload = {"spec": spec.to_yaml(), "backend": trainer.backend, "spec_source": trainer.spec_source,
               "base_dir": trainer.base_dir, "run_dir": str(run_dir), "resume": None if resume is None else str(resume),
               "model": model, "data": data, "callbacks": list(trainer.extra_callbacks), "report_dir": str(work),
               "cores": cores}
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"unified-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
        rdzv_configs={"timeout": int(timeout), "join_timeout": int(timeout), "read_timeout": int(timeout)},
        max_restarts=0, monitor_interval=0.1, start_method=method,
        logs_specs=DefaultLogsSpecs(log_dir=str(work / "logs")),
        shutdown_timeout=int(grace) + 2,  # then SIGKILL: a rank's own watchdog ends it after `grace`
    )
    handled = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)]
    saved_handlers = {s: signal.getsignal(s) for s in handled} if threading.current_thread() is threading.main_thread() \
        else {}
    levels = _quiet_torch_logs()
    saved_env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    try:
        try:
            results = elastic_launch(config, _rank_main)(payload)
        except SignalException as e:
            signum = int(e.sigval)
            reports = _read_reports(work)
            name = signal.Signals(signum).name
            message = reports.get(0, {}).get("message") or f"interrupted by {name}"
            _settle_summary(run_dir, "interrupted", message, override=False)
            if created and not (run_dir / "summary.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise Interrupted(signum, message) from None
        except ChildFailedError as e:
            reports = _read_reports(work)
            rank, report = _failure(e.failures, reports, n)
            kind, line = report.get("kind"), report.get("message", "")
            if kind == "Interrupted" and all(r.get("kind") in ("Interrupted", "ok") for r in reports.values()):
                signum = int(report.get("signum", signal.SIGTERM))  # a rank was sent the signal directly
                _settle_summary(run_dir, "interrupted", line, override=False)
                raise Interrupted(signum, reports.get(0, report).get("message", line)) from None
            if kind in ("SpecError", "NotSupportedError"):  # bad input: the same on every rank, nothing trained
                if created and not (run_dir / "checkpoints").exists():
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise (SpecError if kind == "SpecError" else NotSupportedError)(line) from None
            error = f"rank {rank} of {n}: {line}"
            _settle_summary(run_dir, "failed", error, override=True)
            if created and not (run_dir / "summary.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise TrainingError(f"training failed: {error} (run directory: {run_dir})") from None
        except Exception as e:  # the launcher itself (rendezvous timeout, a port, pickling): one line too
            _settle_summary(run_dir, "failed", f"launcher: {_one_line(e)}", override=True)
            if created and not (run_dir / "summary.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise TrainingError(f"training failed: starting {n} processes with torch's elastic launcher: "
                                f"{_one_line(e)}") from e
    finally:
        import logging

        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for s, h in saved_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if saved_env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = saved_env
        shutil.rmtree(work, ignore_errors=True)
    result = results[0]
    trainer.result = result
    return result
