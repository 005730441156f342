"""The run directory: a new one per run, or the one ``--run-dir`` names."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


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
