"""The run directory, the CSV writer and the progress display (the same on every backend)."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, TextIO


def new_run_dir(log_dir: str, name: str, backend: str) -> Path:
    """Create ``<log_dir>/<name>/<backend>/<run_id>`` with a fresh, time-based run id."""
    parent = Path(log_dir) / name / backend
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        run_id = stamp if i == 0 else f"{stamp}-{i}"
        path = parent / run_id
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory under {parent}")


def prepare_run_dir(path: str | os.PathLike[str]) -> Path:
    """Use ``path`` (from ``--run-dir``) as the run directory; refuses one holding another run."""
    from unified.errors import SpecError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SpecError(f"--run-dir {p}: exists and is not a directory")
    if p.is_dir() and (p / "summary.json").exists():
        raise SpecError(f"--run-dir {p}: already holds a run (summary.json); choose a new directory")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class CsvLogger:
    """Wide ``metrics.csv``: ``epoch, step`` then one column per key, the columns fixed up front.

    Step rows carry ``train/loss`` and ``lr``; epoch rows carry ``train/loss_epoch``, ``val/*`` and ``lr``.
    Each row is written with one call and flushed, so the file never ends in half a row.
    """

    def __init__(self, path: Path, keys: list[str], append: bool = False) -> None:
        self.path = path
        self.columns = ["epoch", "step", *keys]
        resume = append and path.exists() and path.stat().st_size > 0  # a resumed run continues its file
        self._file: Optional[TextIO] = open(path, "a" if resume else "w", encoding="utf-8", newline="")
        if not resume:
            self._write_row(self.columns)

    def _write_row(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        assert self._file is not None
        self._file.write(buf.getvalue())
        self._file.flush()

    def log(self, epoch: int, step: int, values: dict[str, Any]) -> None:
        self._write_row([str(epoch), str(step), *(_fmt(values.get(k)) for k in self.columns[2:])])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressDisplay:
    """One progress line: epoch, step, bar, elapsed<ETA, latest metrics.

    On a terminal the line is redrawn in place at most ten times a second; otherwise (a log file, CI)
    one line is printed per epoch. It never forces a host sync: it shows the last logged values.
    """

    def __init__(self, total_steps: Optional[int], max_epochs: Optional[int], stream: Optional[TextIO] = None,
                 interactive: Optional[bool] = None, keys: tuple[str, ...] = ()) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.total_steps = total_steps
        self.max_epochs = max_epochs
        self.keys = keys
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._width = 0

    def start(self) -> None:
        self._start = time.perf_counter()

    def _line(self, epoch: int, step: int, metrics: dict[str, float]) -> str:
        elapsed = time.perf_counter() - self._start
        parts = [f"epoch {epoch}/{self.max_epochs or '?'}"]
        if self.total_steps:
            frac = min(step / self.total_steps, 1.0)
            filled = int(frac * 20)
            eta = elapsed / step * (self.total_steps - step) if step else math.inf
            parts.append(f"step {step}/{self.total_steps} [{'#' * filled}{'.' * (20 - filled)}] {frac:4.0%}")
            parts.append(f"{_clock(elapsed)}<{_clock(eta)}")
        else:
            parts.append(f"step {step}")
            parts.append(_clock(elapsed))
        shown = [k for k in self.keys if k in metrics] or [k for k in metrics if k != "lr"][:4]
        if shown:
            parts.append(" ".join(f"{k}={metrics[k]:.4g}" for k in shown))
        return " | ".join(parts)

    def step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        if not self.interactive:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self._draw(self._line(epoch, step, metrics))

    def _draw(self, line: str) -> None:
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def epoch_end(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        line = self._line(epoch, step, metrics)
        if self.interactive:
            self._draw(line)
            self.stream.write("\n")
            self._width = 0
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()
