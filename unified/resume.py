"""Checkpoint state shared by every backend, finding what ``--resume`` points at, and signal handling.

A native checkpoint (Lightning ``.ckpt``, Ignite ``Checkpoint`` dict, Keras ``.keras`` zip) also carries the
facade's *run state* (:meth:`unified.events.RunEvents.resume_state`): epoch, step, the position in the
canonical batch order, the partial epoch's loss sum, the last metrics and every callback's ``state_dict``.
Each adapter stores it in its own format; :func:`pack_state` / :func:`unpack_state` turn it into JSON text
plus numpy arrays so every format can hold it. No framework is imported here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from unified.errors import SpecError
from unified.files import atomic_write_text

STATE_FORMAT = 1
RESUMABLE_NAMES = ("interrupted.ckpt", "last.ckpt")  # what ``--resume RUN_DIR`` looks for, newest wins
PORTABLE_SUFFIXES = (".npz", ".safetensors")


# -- the run state as JSON + arrays ------------------------------------------------------------------
def pack_state(state: Any) -> tuple[str, dict[str, np.ndarray]]:
    """``state`` (dicts, lists, scalars, numpy arrays) -> (JSON text, arrays by key)."""
    arrays: dict[str, np.ndarray] = {}

    def enc(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = obj
            return {"__ndarray__": key}
        if isinstance(obj, dict):
            return {str(k): enc(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [enc(v) for v in obj]
        if isinstance(obj, (np.floating, np.integer, np.bool_)):
            return obj.item()
        if isinstance(obj, Path):
            return str(obj)
        return obj

    return json.dumps(enc(state)), arrays


def unpack_state(text: str, arrays: dict[str, Any]) -> Any:
    """Inverse of :func:`pack_state` (arrays may be anything ``np.asarray`` takes)."""

    def dec(obj: Any) -> Any:
        if isinstance(obj, dict):
            if set(obj) == {"__ndarray__"}:
                return np.asarray(arrays[obj["__ndarray__"]])
            return {k: dec(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [dec(v) for v in obj]
        return obj

    return dec(json.loads(text))


# -- what --resume points at --------------------------------------------------------------------------
def find_checkpoint(target: str | os.PathLike[str]) -> tuple[Path, Optional[Path]]:
    """``(checkpoint file, run directory to continue in or None)`` for ``--resume RUN_DIR|CHECKPOINT``.

    A run directory resumes from the newest of ``checkpoints/interrupted.ckpt`` and
    ``checkpoints/last.ckpt`` and is continued in place; a file starts a new run directory.
    """
    p = Path(target)
    if not p.exists():
        raise SpecError(f"--resume {target}: no such file or directory (expected a run directory or a checkpoint file)")
    if p.is_dir():
        if not (p / "spec.yaml").is_file():
            raise SpecError(f"--resume {target}: not a run directory (no spec.yaml); pass a run directory or a "
                            f"checkpoint file")
        found = [p / "checkpoints" / n for n in RESUMABLE_NAMES if (p / "checkpoints" / n).is_file()]
        if not found:
            raise SpecError(f"--resume {target}: the run saved no resumable checkpoint (expected "
                            f"checkpoints/last.ckpt or checkpoints/interrupted.ckpt)")
        return max(found, key=lambda f: f.stat().st_mtime_ns), p
    return p, None


def is_portable(path: Path) -> bool:
    return path.suffix.lower() in PORTABLE_SUFFIXES


def load_portable_weights(path: Path) -> dict[str, np.ndarray]:
    """Portable weights (``.npz``, or ``.safetensors`` when that package is installed)."""
    try:
        if path.suffix.lower() == ".safetensors":
            try:
                from safetensors.numpy import load_file
            except ImportError:
                raise SpecError(f"--resume {path}: reading .safetensors needs the safetensors package "
                                f"(pip install safetensors)") from None
            return dict(load_file(str(path)))
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is a user input problem
        raise SpecError(f"--resume {path}: cannot read portable weights: {e}") from None


def resume_position(run_state: dict[str, Any], steps_per_epoch: Optional[int]) -> tuple[int, int]:
    """``(0-based epoch to run next, batches of it already done)`` from a checkpoint's run state."""
    epoch, done = int(run_state["epoch"]), int(run_state["batches_done"])
    if epoch == 0:
        return 0, 0
    if steps_per_epoch is None or done >= steps_per_epoch:
        return epoch, 0
    return epoch - 1, done


def nothing_left(run_state: dict[str, Any], spec: Any, steps_per_epoch: Optional[int]) -> Optional[str]:
    """Why the spec has no training left after the checkpoint (None when it has)."""
    step = int(run_state["global_step"])
    max_steps, max_epochs = spec.trainer.max_steps, spec.trainer.max_epochs
    if max_steps is not None:
        if step >= max_steps:
            return f"the checkpoint is at step {step} and trainer.max_steps is {max_steps}"
        return None
    e0, _ = resume_position(run_state, steps_per_epoch)
    if max_epochs is not None and e0 >= max_epochs:
        return f"the checkpoint is at the end of epoch {e0} and trainer.max_epochs is {max_epochs}"
    return None


# -- metrics.csv when continuing a run in place -----------------------------------------------------------
def truncate_metrics(path: Path, columns: list[str], run_state: dict[str, Any]) -> None:
    """Keep the rows of ``metrics.csv`` written up to the checkpoint (drop what a crash left after it)."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != columns:
        have = ", ".join(rows[0]) if rows else "(empty)"
        raise SpecError(f"--resume: {path} has columns {have}; the spec logs {', '.join(columns)} "
                        f"(metrics changed); resume with the run's own metrics")
    step, epoch, closed = int(run_state["global_step"]), int(run_state["epoch"]), bool(run_state["epoch_closed"])
    epoch_col = columns.index("train/loss_epoch") if "train/loss_epoch" in columns else None
    keep = [rows[0]]
    for row in rows[1:]:
        if len(row) != len(columns):
            continue
        e, s = int(row[0]), int(row[1])
        is_epoch_row = epoch_col is not None and row[epoch_col] != ""
        if s > step or (is_epoch_row and e == epoch and s == step and not closed):
            continue
        keep.append(row)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(keep)
    atomic_write_text(path, buf.getvalue())


# -- SIGINT / SIGTERM ----------------------------------------------------------------------------------------
class SignalGuard:
    """While active, SIGINT and SIGTERM ask the run to stop at the next batch boundary.

    The first signal only sets a flag (``on_signal(signum)``): the facade then saves a checkpoint at a
    consistent point and raises :class:`~unified.errors.Interrupted`. A second signal raises at once.
    Installed only in the main thread; the previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self.on_signal = on_signal
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        # Several processes: a Ctrl-C reaches every rank from the terminal and again from the launcher,
        # which forwards it; a repeat within this many seconds is that echo, not a second request.
        self.repeat_grace = 0.0
        self._received_at = 0.0

    def _handler(self, signum: int, frame: Any) -> None:
        import time

        from unified.errors import Interrupted

        if self.received is not None:
            if time.monotonic() - self._received_at < self.repeat_grace:
                return
            raise Interrupted(signum, f"interrupted again by signal {signum}; stopping now, without a checkpoint")
        self.received, self._received_at = signum, time.monotonic()
        self.on_signal(signum)

    def install(self) -> None:
        """(Re)install the handlers, e.g. after a trainer replaced them with its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            current = signal.getsignal(sig)
            if sig not in self._previous:
                self._previous[sig] = current
            if current is not self._handler:
                signal.signal(sig, self._handler)

    def __enter__(self) -> "SignalGuard":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
