"""Multi-process training: who this process is, and starting the other processes on one machine.

Framework-free. The torch backends join the process group from the standard environment variables
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``: torchrun's ``env://``
rendezvous), whoever set them:

* ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m unified.cli run ...``
  (several machines, or one) sets them for every process;
* otherwise, with ``trainer.devices: N > 1`` on one machine, the facade is its own launcher, as Lightning's
  subprocess launcher is: it starts ``N - 1`` copies of the current command (``sys.argv``) with those
  variables set and trains as rank 0 itself. Like Lightning's, this needs a re-runnable script (not a
  notebook or ``python -c``).

Only rank 0 writes the run directory (logs, checkpoints, summary, exports); the other ranks write into
a throw-away temporary directory, which the facade removes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR",
             "MASTER_PORT")
WORKER_FLAG = "UNIFIED_DDP_WORKER"  # set in the processes the facade starts


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command() -> list[str]:
    # As Lightning's _SubprocessScriptLauncher: re-run the script (or module) with the same arguments.
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", name, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.exists(script):
        from unified.errors import SpecError

        raise SpecError("trainer.devices > 1 needs a re-runnable script (`unified run`, `python train.py`); "
                        "from a notebook or `python -c`, launch with torchrun instead", path="trainer.devices")
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


class Launch:
    """Start ``devices - 1`` worker processes and make this process rank 0 (a context manager).

    Inside the ``with`` block the environment describes the job; on exit it is restored and the workers
    are waited for. ``failed()`` names the workers that exited non-zero.
    """

    def __init__(self, spec: Any) -> None:
        self.n = int(spec.trainer.devices)
        self.procs: list[subprocess.Popen] = []
        self._saved: dict[str, Optional[str]] = {}

    def __enter__(self) -> World:
        cmd = _command()
        port = str(_free_port())
        base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(self.n),
                "LOCAL_WORLD_SIZE": str(self.n), "NODE_RANK": "0", "GROUP_RANK": "0"}
        for rank in range(1, self.n):
            env = dict(os.environ, **base, RANK=str(rank), LOCAL_RANK=str(rank), **{WORKER_FLAG: "1"})
            self.procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
        self._saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.update(base, RANK="0", LOCAL_RANK="0")
        return world_from_env()

    def __exit__(self, *exc: Any) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        failed = exc[0] is not None
        for p in self.procs:
            try:
                p.wait(timeout=5 if failed else 600)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def failed(self) -> list[str]:
        return [f"rank {i + 1} exited with {p.returncode}" for i, p in enumerate(self.procs) if p.returncode]
