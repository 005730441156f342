"""The progress display: one line per run, the same on every backend."""

from __future__ import annotations

import math
import sys
import time
from typing import Optional, TextIO


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
