"""Multi-process training (trainer.devices: 2) from `unified run` on the torch-based backends.

The command starts its ranks with torch's elastic launcher (unified.distributed.launch). Each rank takes its
contiguous half of every global batch and DDP averages the gradients, so two processes follow the
single-process run: the test pins every logged train loss within 1e-6, with callbacks, early stopping,
checkpoints and the TensorBoard logger on. Then nothing may hang: a rank that dies ends the whole run with a
non-zero exit naming it; SIGTERM to the command ends every rank within seconds (status interrupted, exit
143), also while a rank is stuck and the others wait in a collective; a collective waiting for a stuck rank
times out. Every test runs the command in its own process group and kills that group in a finally.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from unified import UnifiedTrainer

TORCH_BACKENDS = [b for b in ("torch", "lightning", "ignite")
                  if b in __import__("unified.registry", fromlist=["x"]).installed_backends()]
LAUNCH_TIMEOUT = 300  # a run here takes 10-60 s (2 cores, shared); this is only the last resort

# A user callback that misbehaves on one rank at one epoch (imported by the spec's `python:` callback).
CHAOS = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from unified.callbacks import Callback

    class Chaos(Callback):
        def __init__(self, action="", rank=1, epoch=2, marks=".", slow=0.0):
            self.action, self.rank, self.epoch, self.marks, self.slow = action, rank, epoch, Path(marks), slow

        def on_epoch_start(self, state):
            if int(os.environ.get("RANK", "0")) != self.rank or state.epoch != self.epoch:
                return
            (self.marks / f"{self.action}.json").write_text(
                '{"pid": %d, "time": %r}' % (os.getpid(), time.time()))
            if self.action == "exit":
                os._exit(3)
            if self.action == "hang":  # Python keeps running (its signal handler too): only the watchdog ends it
                while True:
                    time.sleep(0.2)

        def on_train_batch_end(self, state):
            if self.slow:
                time.sleep(self.slow)
''')


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    tmp = tmp_path / "tmp"  # where the other ranks keep their throw-away run directories
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp), **extra)


def _write_spec(tmp_path: Path, spec: dict[str, Any]) -> Path:
    (tmp_path / "chaos_cb.py").write_text(CHAOS)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _chaos(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return {"python": {"target": "chaos_cb:Chaos", "kwargs": {"marks": str(tmp_path), **kwargs}}}


def _group_alive(pgid: int) -> list[int]:
    """Pids still in process group ``pgid`` (zombies aside)."""
    alive = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(d.name))
    return alive


class Command:
    """`python -m unified run ...` in its own process group, which is always killed at the end."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.out, self.err = open(cwd / "stdout.txt", "w+"), open(cwd / "stderr.txt", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "unified", "run", *args], env=env, cwd=str(cwd),
                                     stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.ended_at: Optional[float] = None

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`unified run` still running after {timeout} s\n{self.stderr[-3000:]}")
        self.ended_at = time.time()
        return code

    def wait_for(self, path: Path, timeout: float) -> dict[str, Any]:
        end = time.time() + timeout
        while time.time() < end:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except ValueError:
                    pass
            if self.proc.poll() is not None:
                pytest.fail(f"`unified run` ended (exit {self.proc.returncode}) before {path.name}\n{self.stderr[-3000:]}")
            time.sleep(0.05)
        pytest.fail(f"no {path.name} after {timeout} s\n{self.stderr[-3000:]}")

    def leftovers(self, within: float = 5.0) -> list[int]:
        end = time.time() + within
        while _group_alive(self.proc.pid) and time.time() < end:
            time.sleep(0.1)
        return _group_alive(self.proc.pid)

    @property
    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    @property
    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self.out.close()
        self.err.close()


def _run(tmp_path: Path, spec: dict[str, Any], backend: str, run_dir: Path, env: Optional[dict[str, str]] = None,
         extra: tuple[str, ...] = ()) -> Command:
    spec_path = _write_spec(tmp_path, spec)
    return Command([str(spec_path), "--backend", backend, "--run-dir", str(run_dir), "--set", "trainer.devices=2",
                    *extra], env or _env(tmp_path), tmp_path)


@pytest.mark.parametrize("torch_backend", TORCH_BACKENDS)
def test_two_processes_match_one(torch_backend, make_spec, tmp_path):
    """The README example's features on: callbacks, early stopping, checkpoints, TensorBoard; world_size 2."""
    spec = make_spec({"data": {"batch_size": 32}, "model": {"hidden": [32]},
                      "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                      "trainer": {"max_epochs": 4, "log_every_n_steps": 3}, "metrics": ["accuracy"],
                      "callbacks": [
                          # min_delta larger than any gain: stops after epoch 2 on every rank at once
                          {"early_stopping": {"monitor": "val/loss", "patience": 1, "min_delta": 100.0}},
                          {"model_checkpoint": {"monitor": "val/accuracy", "mode": "max", "save_top_k": 1,
                                                "save_last": True}},
                          "lr_monitor"],
                      "logging": {"loggers": ["csv", "tensorboard"]}})
    backend = torch_backend
    cmd = _run(tmp_path, spec, backend, tmp_path / "two")
    try:
        code = cmd.wait(LAUNCH_TIMEOUT)
        assert code == 0, cmd.stderr[-3000:]
        assert cmd.stdout.count("run directory:") == 1, cmd.stdout  # only the launcher reports
        assert not cmd.leftovers()
    finally:
        cmd.close()

    one = UnifiedTrainer(spec, backend=backend, run_dir=tmp_path / "one").fit()
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one.summary["world_size"] == 1
    assert two["status"] == one.status == "stopped_early"
    assert two["epochs"] == one.epochs == 2 and two["global_step"] == one.global_step
    assert abs(two["metrics"]["val/loss"] - one.metrics["val/loss"]) <= 1e-6
    rows_one, rows_two = _rows(tmp_path / "one" / "metrics.csv"), _rows(tmp_path / "two" / "metrics.csv")
    assert [(r["epoch"], r["step"]) for r in rows_one] == [(r["epoch"], r["step"]) for r in rows_two]
    assert sum(1 for r in rows_two if r["train/loss"]) >= 10
    for a, b in zip(rows_one, rows_two):
        for key in ("train/loss", "train/loss_epoch", "val/loss", "val/accuracy"):
            if a[key]:
                assert abs(float(a[key]) - float(b[key])) <= 1e-6, (key, a, b)
    # rank 1 wrote nothing that lasts: one run directory, the same files as one process
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))
    # no rank directory, no launcher scratch left (torch may leave its own caches there)
    assert not [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith(("unified-", "torchelastic"))]


def _slow_spec(make_spec, tmp_path: Path, chaos: dict[str, Any], epochs: int = 30) -> dict[str, Any]:
    return make_spec({"trainer": {"max_epochs": epochs, "log_every_n_steps": 5},
                      "callbacks": [{"model_checkpoint": {"monitor": "val/loss", "save_last": True}},
                                    _chaos(tmp_path, **chaos)]})


@pytest.mark.parametrize("torch_backend, how", [("ignite", "exit"), ("torch", "sigkill")])
def test_a_dead_rank_ends_the_run(torch_backend, how, make_spec, tmp_path):
    """Rank 1 leaves (os._exit(3) in a user callback / SIGKILL): the command exits 1 within 60 s naming it."""
    backend = torch_backend
    if backend not in TORCH_BACKENDS:
        pytest.skip(f"{backend} is not installed")
    action = "exit" if how == "exit" else "mark"
    spec = _slow_spec(make_spec, tmp_path, {"action": action, "rank": 1, "epoch": 2, "slow": 0.02})
    cmd = _run(tmp_path, spec, backend, tmp_path / "run")
    try:
        mark = cmd.wait_for(tmp_path / f"{action}.json", LAUNCH_TIMEOUT)
        if how == "sigkill":
            os.kill(mark["pid"], signal.SIGKILL)
            died = time.time()
        else:
            died = mark["time"]
        code = cmd.wait(60)
        took = cmd.ended_at - died
        err = cmd.stderr
        assert code == 1, err[-3000:]
        assert took < 60, took
        # the exit code when the agent saw rank 1 go first, else (rank 0 lost its peer at the same moment)
        # the rank that left no error behind
        expect = ("exited with code 3" if how == "exit" else "killed by SIGKILL", "ended without an error message")
        lines = [line for line in err.splitlines() if "rank 1 of 2" in line]
        assert lines and any(e in lines[-1] for e in expect), err[-3000:]
        assert "Traceback" not in err
        assert not cmd.leftovers(), "a rank outlived the command"
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["status"] == "failed" and "rank 1 of 2" in summary["error"]
    finally:
        cmd.close()


@pytest.mark.parametrize("torch_backend", ["lightning"])
def test_sigterm_stops_every_rank_with_a_checkpoint(torch_backend, make_spec, tmp_path):
    """SIGTERM to the command during training: every rank stops at the same step, rank 0 checkpoints, exit 143."""
    backend = torch_backend
    if backend not in TORCH_BACKENDS:
        pytest.skip(f"{backend} is not installed")
    spec = _slow_spec(make_spec, tmp_path, {"action": "mark", "rank": 0, "epoch": 2, "slow": 0.02})
    cmd = _run(tmp_path, spec, backend, tmp_path / "run")
    try:
        cmd.wait_for(tmp_path / "mark.json", LAUNCH_TIMEOUT)
        time.sleep(0.3)  # inside epoch 2
        sent = time.time()
        cmd.proc.send_signal(signal.SIGTERM)
        code = cmd.wait(10)
        assert code == 143, cmd.stderr[-3000:]
        assert cmd.ended_at - sent < 10
        assert not cmd.leftovers(), "a rank outlived the command"
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["world_size"] == 2
        assert (tmp_path / "run" / "checkpoints" / "interrupted.ckpt").is_file()
        assert "SIGTERM" in cmd.stderr and "--resume" in cmd.stderr
    finally:
        cmd.close()


def test_sigterm_while_waiting_in_a_collective(make_spec, tmp_path):
    """Rank 1 is stuck in a user callback, so rank 0 waits in a collective where Python cannot run its signal
    handler: SIGTERM still ends the command within 10 s (each rank's watchdog), status interrupted."""
    if "ignite" not in TORCH_BACKENDS:
        pytest.skip("ignite is not installed")
    spec = _slow_spec(make_spec, tmp_path, {"action": "hang", "rank": 1, "epoch": 2})
    cmd = _run(tmp_path, spec, "ignite", tmp_path / "run", env=_env(tmp_path, UNIFIED_DDP_SIGNAL_GRACE="2"))
    try:
        cmd.wait_for(tmp_path / "hang.json", LAUNCH_TIMEOUT)
        time.sleep(1.0)  # rank 0 is blocked in the step's all-reduce by now
        sent = time.time()
        cmd.proc.send_signal(signal.SIGTERM)
        code = cmd.wait(10)
        assert code == 143, cmd.stderr[-3000:]
        assert cmd.ended_at - sent < 10
        assert not cmd.leftovers(), "a rank outlived the command"
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert "blocked in a collective" in cmd.stderr
    finally:
        cmd.close()


def test_a_collective_waiting_for_a_stuck_rank_times_out(make_spec, tmp_path):
    """UNIFIED_DDP_TIMEOUT bounds every collective: rank 0 gives up on a stuck rank 1 and the run fails."""
    if "torch" not in TORCH_BACKENDS:
        pytest.skip("torch is not installed")
    spec = _slow_spec(make_spec, tmp_path, {"action": "hang", "rank": 1, "epoch": 2})
    cmd = _run(tmp_path, spec, "torch", tmp_path / "run",
               env=_env(tmp_path, UNIFIED_DDP_TIMEOUT="4", UNIFIED_DDP_SIGNAL_GRACE="2"))
    try:
        mark = cmd.wait_for(tmp_path / "hang.json", LAUNCH_TIMEOUT)
        code = cmd.wait(60)
        assert code == 1, cmd.stderr[-3000:]
        assert cmd.ended_at - mark["time"] < 30
        line = [ln for ln in cmd.stderr.splitlines() if "training failed" in ln][-1]
        assert "rank 0 of 2" in line, line
        assert not cmd.leftovers(), "a rank outlived the command"
    finally:
        cmd.close()


def test_bad_timeout_setting_is_refused(make_spec, tmp_path, monkeypatch):
    from unified.distributed import timeout_s
    from unified.errors import SpecError

    monkeypatch.setenv("UNIFIED_DDP_TIMEOUT", "soon")
    with pytest.raises(SpecError, match="UNIFIED_DDP_TIMEOUT"):
        timeout_s()
    monkeypatch.setenv("UNIFIED_DDP_TIMEOUT", "30")
    assert timeout_s() == 30.0


def test_num_nodes_without_torchrun_is_refused(make_spec, tmp_path):
    pytest.importorskip("ignite")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec({"trainer": {"num_nodes": 2}})))
    proc = subprocess.run([sys.executable, "-m", "unified", "run", str(spec_path), "--backend", "ignite"],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "trainer.num_nodes" in proc.stderr and "torchrun" in proc.stderr and "Traceback" not in proc.stderr


class _SaveWeights:
    """A facade callback that writes this rank's final weights of ``model`` to ``<out>/rank<RANK>.npz`` (the
    ranks are forked, so each holds its own copy of the very module it trained)."""

    def __new__(cls, model: Any, out: Path) -> Any:
        from unified.callbacks import Callback

        class SaveWeights(Callback):
            def on_fit_end(self, state: Any) -> None:
                import numpy as np

                weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
                np.savez(out / f"rank{os.environ.get('RANK', 'single')}.npz", **weights)

        return SaveWeights()


def _lightning_module(seed: int) -> Any:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return {"loss": F.cross_entropy(self(x), y)}

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)

    torch.manual_seed(seed)
    return Lit()


@pytest.mark.parametrize("torch_backend", TORCH_BACKENDS)
def test_a_users_lightning_module_is_averaged_across_ranks(torch_backend, tmp_path):
    """fit(model=<LightningModule>) with devices 2: its training_step runs through DDP's forward (on torch and
    ignite as Lightning does it), so the ranks' gradients are averaged: both ranks end with identical weights, and every step's loss
    and the final weights equal the single-process run's (each global batch of 16 splits 8 + 8, so the mean of
    the two halves' mean losses is the batch's mean loss)."""
    import numpy as np
    from sklearn.datasets import load_iris

    pytest.importorskip("pytorch_lightning")
    x, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(x))[:100]  # 80 train (5 batches of 16), 20 val
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)[idx]
    y = y[idx]

    def spec(devices: int) -> dict[str, Any]:
        return {"name": "lm", "task": "classification", "data": {"batch_size": 16, "val_fraction": 0.2},
                "trainer": {"max_epochs": 3, "devices": devices, "log_every_n_steps": 1, "progress_bar": False},
                "metrics": ["accuracy"], "logging": {"dir": str(tmp_path / "runs")}}

    two_dir, one_dir = tmp_path / "w2", tmp_path / "w1"
    two_dir.mkdir()
    one_dir.mkdir()
    model = _lightning_module(seed=1)
    two = UnifiedTrainer(spec(2), backend=torch_backend, run_dir=tmp_path / "two",
                         callbacks=[_SaveWeights(model, two_dir)]).fit(model=model, data=(x, y))
    model = _lightning_module(seed=1)
    one = UnifiedTrainer(spec(1), backend=torch_backend, run_dir=tmp_path / "one",
                         callbacks=[_SaveWeights(model, one_dir)]).fit(model=model, data=(x, y))

    assert two.summary["world_size"] == 2 and two.global_step == one.global_step == 15
    r0, r1, single = (np.load(p) for p in (two_dir / "rank0.npz", two_dir / "rank1.npz", one_dir / "ranksingle.npz"))
    for key in single.files:
        assert np.array_equal(r0[key], r1[key]), f"ranks drifted apart: {key}"
        assert np.abs(r0[key] - single[key]).max() <= 1e-5, key
    rows_one = [r for r in _rows(tmp_path / "one" / "metrics.csv") if r["train/loss"]]
    rows_two = [r for r in _rows(tmp_path / "two" / "metrics.csv") if r["train/loss"]]
    assert len(rows_one) == len(rows_two) == 15
    for a, b in zip(rows_one, rows_two):
        assert abs(float(a["train/loss"]) - float(b["train/loss"])) <= 1e-6, (a, b)
    assert abs(two.metrics["val/loss"] - one.metrics["val/loss"]) <= 1e-5
