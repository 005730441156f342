"""Peak resident memory of ``unified run`` on a memory-mapped ``.npy`` larger than what it may hold.

Run:  python benchmarks/peak_rss.py [--gb 2.0] [--backends torch,keras-tensorflow] [--max-steps 300]
                                    [--batch-size 64] [--num-workers 0] [--no-standardize] [--dir DIR]
                                    [--json OUT]

Writes ``x.npy`` (``--gb`` GB of float32 ``[N, 3, 32, 32]``, written a chunk at a time through
``numpy.lib.format.open_memmap``, never whole in this process) and ``y.npy`` (int64 labels, 10 classes)
into a temporary folder under ``--dir`` (default: the system's temp folder; the free space is checked
first), then per backend runs

    unified run spec.yaml --backend B --run-dir <tmp>/run-B --no-progress

on ``source: npy:x.npy,y.npy`` with ``data.mmap: true`` and ``standardize: true`` (per-channel statistics
streamed over the train split: the whole file is read once), a 10% validation split (evaluated through the
memory map at the end), a small ``cnn`` and ``trainer.max_steps``. While the run goes, the resident set of
its process tree (the run and any ``data.num_workers`` processes) is sampled from ``/proc`` every 50 ms,
with each process's own high-water mark (``VmHWM``, which catches a spike between samples); when it ends,
the kernel's peak for the child (``ru_maxrss`` from ``os.wait4``) is read too; the tree's proportional set
size (``Pss``: pages shared between the processes counted once) is sampled beside the RSS. The files are written by
a separate process: a child's ``ru_maxrss`` starts from its parent's high-water mark at ``fork``, and
writing 2 GB through a memory map would raise this process's to 2 GB (it did: every run then "peaked" at
2170 MB). Target: the largest of the three RSS figures < 1 GB for a 2 GB file. The page cache the file occupies is not the process's (it is
reclaimable, shared, and not counted in RSS); the temporary folder is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (3, 32, 32)
CLASSES = 10
BACKENDS = {"torch": ["--backend", "torch"], "lightning": ["--backend", "lightning"],
            "ignite": ["--backend", "ignite"],
            "keras-tensorflow": ["--backend", "keras", "--keras-backend", "tensorflow"],
            "keras-torch": ["--backend", "keras", "--keras-backend", "torch"],
            "keras-jax": ["--backend", "keras", "--keras-backend", "jax"]}


def write_arrays(folder: Path, gb: float, seed: int = 0) -> tuple[Path, Path, int]:
    """``x.npy`` of ``gb`` GB float32 ``[N, 3, 32, 32]`` and ``y.npy`` int64 ``[N]``, written in chunks.

    Class ``k`` images get ``+0.5 * k`` on channel ``k % 3`` so there is something to learn."""
    row = int(np.prod(SAMPLE)) * 4
    n = int(gb * (1 << 30)) // row
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n).astype(np.int64)
    xp, yp = folder / "x.npy", folder / "y.npy"
    x = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32, shape=(n, *SAMPLE))
    step = max(1, (64 << 20) // row)
    for start in range(0, n, step):
        stop = min(n, start + step)
        chunk = rng.standard_normal((stop - start, *SAMPLE), dtype=np.float32)
        ys = y[start:stop]
        chunk[np.arange(stop - start), ys % 3] += 0.5 * ys[:, None, None].astype(np.float32)
        x[start:stop] = chunk
        x.flush()
    del x
    np.save(yp, y)
    return xp, yp, n


def spec_text(xp: Path, yp: Path, a: argparse.Namespace) -> str:
    return f"""name: peak-rss
seed: 0
data:
  source: npy:{xp},{yp}
  mmap: true
  standardize: {str(a.standardize).lower()}
  val_fraction: 0.1
  batch_size: {a.batch_size}
  num_workers: {a.num_workers}
model: {{arch: cnn, channels: [8, 16], kernel_size: 3, pool: 2, hidden: [32]}}
optimizer: {{name: adam, lr: 0.001}}
trainer: {{max_steps: {a.max_steps}, max_epochs: 1, log_every_n_steps: 50, progress_bar: false}}
metrics: [accuracy]
"""


def _tree_rss(pid: int) -> tuple[int, int, int]:
    """``(resident bytes, sum of peak resident bytes, proportional set size)`` of ``pid`` and every process
    below it (0 when gone): ``VmRSS`` / ``VmHWM`` from ``/proc/<pid>/status``, ``Pss`` from
    ``/proc/<pid>/smaps_rollup``. ``VmHWM`` catches a spike between two samples (each process's own high-water
    mark; summed, an upper bound of the tree's); ``Pss`` splits pages shared between processes (the
    interpreter's and numpy's libraries, the batch slots in ``/dev/shm``) among them, where RSS counts them in
    each: the tree's real footprint."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = hwm = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) * 1024
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return rss, hwm, pss


def run_one(backend: str, spec_path: Path, run_dir: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "unified", "run", str(spec_path), *BACKENDS[backend], "--run-dir", str(run_dir),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(run_dir.parent / f"{backend}.log", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    peak = {"tree": 0, "hwm": 0, "pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, hwm, pss = _tree_rss(proc.pid)
            peak["tree"], peak["hwm"], peak["pss"] = max(peak["tree"], rss), max(peak["hwm"], hwm), max(peak["pss"], pss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status, usage = 0, None
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join(timeout=5)
    seconds = time.perf_counter() - t0
    log.seek(0)
    tail = log.read()[-2000:]
    log.close()
    summary = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    return {"backend": backend, "exit": proc.returncode, "seconds": seconds,
            "peak_tree_bytes": peak["tree"], "peak_hwm_bytes": peak["hwm"], "peak_pss_bytes": peak["pss"],
            "ru_maxrss_bytes": usage.ru_maxrss * 1024 if usage else 0,
            "steps": summary.get("global_step", summary.get("steps")),
            "metrics": {k: v for k, v in (summary.get("final_metrics") or summary.get("metrics") or {}).items()
                        if isinstance(v, (int, float))},
            "log_tail": tail if proc.returncode != 0 else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.0, help="size of x.npy in GB (2**30 bytes)")
    p.add_argument("--backends", default="torch,keras-tensorflow")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--no-standardize", dest="standardize", action="store_false")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary folder goes")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--write-only", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.write_only:
        print(write_arrays(Path(a.write_only), a.gb)[2])
        return

    backends = [b for b in a.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"--backends: unknown {', '.join(unknown)}; expected some of {', '.join(BACKENDS)}")
    need = int(a.gb * (1 << 30) * 1.05) + (200 << 20)
    free = shutil.disk_usage(a.dir).free
    if free < need:
        raise SystemExit(f"--dir {a.dir}: {free / 2**30:.1f} GB free, {need / 2**30:.1f} GB needed")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="unified-peak-rss-", dir=a.dir) as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        # in a child process: a child's ru_maxrss starts from its parent's high-water mark at fork, and
        # writing through a memory map raises this process's to the file's size
        out = subprocess.run([sys.executable, __file__, "--write-only", str(folder), "--gb", str(a.gb)],
                             capture_output=True, text=True, timeout=a.timeout)
        if out.returncode != 0:
            raise SystemExit(f"writing the arrays failed:\n{out.stderr[-2000:]}")
        xp, yp, n = folder / "x.npy", folder / "y.npy", int(out.stdout.split()[-1])
        print(f"wrote {xp} ({xp.stat().st_size / 2**30:.2f} GB, {n} x {list(SAMPLE)} float32) and {yp} in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        spec_path = folder / "spec.yaml"
        spec_path.write_text(spec_text(xp, yp, a))
        for b in backends:
            r = run_one(b, spec_path, folder / f"run-{b}", a.timeout)
            results.append(r)
            line = (f"{b:18s} exit {r['exit']}  peak RSS {r['peak_tree_bytes'] / 2**20:5.0f} MB (process tree, "
                    f"sampled), {r['peak_hwm_bytes'] / 2**20:5.0f} MB (VmHWM), {r['ru_maxrss_bytes'] / 2**20:5.0f} MB "
                    f"(ru_maxrss), {r['peak_pss_bytes'] / 2**20:5.0f} MB (PSS, sampled)  {r['seconds']:.0f} s  "
                    f"steps {r['steps']}  {r['metrics']}")
            print(line, flush=True)
            if r["exit"] != 0:
                print(r["log_tail"])
    print(f"\nx.npy {a.gb:.2f} GB, data.mmap: true, standardize: {a.standardize}, num_workers {a.num_workers}, "
          f"max_steps {a.max_steps}, batch {a.batch_size}; target peak < 1024 MB")
    for r in results:
        worst = max(r["peak_tree_bytes"], r["peak_hwm_bytes"], r["ru_maxrss_bytes"])
        ok = "OK" if r["exit"] == 0 and worst < (1 << 30) else "MISS"
        print(f"  {r['backend']:18s} peak {worst / 2**20:5.0f} MB (the largest RSS figure)  {ok};  "
              f"PSS {r['peak_pss_bytes'] / 2**20:5.0f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=1))


if __name__ == "__main__":
    main()
