"""Checkpoints, exact resume and faults on every installed backend (items 1, 5 and 6 of issue 4).

Small and fast on purpose: iris (120 train samples, batch 16 -> 8 steps per epoch).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from unified import TrainingError, UnifiedTrainer
from unified.callbacks import Callback, EarlyStopping
from unified.cli import main
from unified.errors import Interrupted
from unified.registry import installed_backends

BACKENDS = installed_backends()
STEPS_PER_EPOCH = 8  # iris: 150 samples, val_fraction 0.2 -> 120 train, batch 16


def iris_spec(tmp_path: Path, **trainer) -> dict:
    return {
        "name": "r", "seed": 0,
        "data": {"source": "sklearn:iris", "standardize": True, "val_fraction": 0.2, "batch_size": 16},
        "model": {"arch": "mlp", "hidden": [16]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 6, "log_every_n_steps": 1, "progress_bar": False, **trainer},
        "callbacks": [{"early_stopping": {"monitor": "val/loss", "patience": 2, "min_delta": 0.05}},
                      {"model_checkpoint": {"monitor": "val/accuracy", "mode": "max", "save_top_k": 2}}],
        "logging": {"dir": str(tmp_path / "runs")},
    }


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def step_losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["train/loss"]) for r in rows(run_dir) if r["train/loss"]}


class SignalAt(Callback):
    """Sends this process ``sig`` after optimizer step ``step`` (a real signal, handled like Ctrl-C / kill)."""

    def __init__(self, step: int, sig: int = signal.SIGTERM) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_end(self, state) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class Poison(Callback):
    """Sets every weight to NaN after optimizer step ``step``: the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, state) -> None:
        if state.global_step == self.step:
            state.set_weights({k: np.full_like(v, np.nan) for k, v in state.get_weights().items()})


class Trace(Callback):
    """Records what every hook sees of the TrainState."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def _rec(self, hook: str, state, *extra) -> None:
        self.log.append((hook, state.epoch, state.global_step, state.batch_idx, state.status, state.should_stop,
                         *extra))

    def on_fit_start(self, state): self._rec("fit_start", state)
    def on_epoch_start(self, state): self._rec("epoch_start", state)
    def on_train_batch_end(self, state): self._rec("batch_end", state)
    def on_validation_end(self, state, metrics): self._rec("validation_end", state, tuple(sorted(metrics)))
    def on_epoch_end(self, state): self._rec("epoch_end", state)
    def on_checkpoint_saved(self, state, path): self._rec("checkpoint_saved", state, Path(path).name)
    def on_fit_end(self, state): self._rec("fit_end", state)
    def on_exception(self, state, error): self._rec("exception", state, type(error).__name__)


class Boom(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, state) -> None:
        if state.global_step == self.step:
            raise RuntimeError(f"boom at step {self.step}")


SIGNAL_ONCE = '''
import os
import signal
from unified.callbacks import Callback


class SignalOnce(Callback):
    """Sends this process ``sig`` after optimizer step ``step``, once per run directory (a real signal,
    handled like Ctrl-C / kill; the resumed run that passes the step again is left alone)."""

    def __init__(self, step, sig="SIGINT"):
        self.step, self.sig = step, getattr(signal, sig)

    def on_train_batch_end(self, state):
        marker = state.run_dir / f".signal-at-{self.step}"
        if state.global_step == self.step and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), self.sig)
'''


@pytest.fixture
def resume_runs(tmp_path, run_target_shared):
    """``resume_runs(target)``: one process per target for the resume chain and the checkpoint-file resume.

    full: 6 epochs in one go. first: 3 epochs; killed: resumed to 6, Ctrl-C'd at step 4 * 8 + 3 (exit 130);
    done: resumed again to 6. two: 2 epochs; three: from two's last.ckpt to 3 epochs (a new run directory).
    With an lr schedule stepped per optimizer step, so the scheduler state has to come back too.
    """

    def spec(**trainer):
        out = {**iris_spec(tmp_path, **trainer),
               "scheduler": {"name": "exponential", "gamma": 0.97, "interval": "step"}}
        out.pop("logging")  # the shared runner's directory
        return out

    def chain():
        out = spec()
        out["callbacks"] = out["callbacks"] + [
            {"python": {"target": "ut_signal_once:SignalOnce", "kwargs": {"step": 4 * STEPS_PER_EPOCH + 3}}}]
        return out

    def plain(**trainer):
        out = iris_spec(tmp_path, **trainer)
        out.pop("logging")
        return out

    def _runs(target):
        Job = run_target_shared.Job
        first = chain()
        first["trainer"]["max_epochs"] = 3
        return run_target_shared.many([
            Job(target, spec(), name="full"),
            Job(target, first, name="first", files={"ut_signal_once.py": SIGNAL_ONCE}),
            Job(target, chain(), name="killed", resume="first", expect=130),
            Job(target, chain(), name="done", resume="first"),
            Job(target, plain(max_epochs=2), name="two"),
            Job(target, plain(max_epochs=3), name="three", resume="two/checkpoints/last.ckpt"),
        ])

    return _runs


def test_resume_3_to_6_epochs_and_mid_epoch_matches_an_uninterrupted_run(target, resume_runs):
    """3 epochs; resumed to 6 but Ctrl-C'd mid-epoch 5; resumed again: the same as 6 epochs in one go."""
    runs = resume_runs(target)
    full, first, killed, done = (runs[n].ok() for n in ("full", "first", "killed", "done"))
    assert first.summary["global_step"] == 3 * STEPS_PER_EPOCH and first.summary["status"] == "completed"

    run_dir = first.run_dir  # a run directory is continued in place
    assert killed.run_dir == done.run_dir == run_dir
    assert killed.summary["status"] == "interrupted" and killed.summary["global_step"] == 4 * STEPS_PER_EPOCH + 3
    err = [ln for ln in killed.stderr.splitlines() if ln.startswith("unified: error:")]
    assert len(err) == 1 and "interrupted by SIGINT" in err[0] and f"--resume {run_dir}" in err[0], killed.stderr[-2000:]
    assert (run_dir / "checkpoints" / "interrupted.ckpt").stat().st_size > 0

    assert done.summary["status"] == full.summary["status"]
    assert done.summary["global_step"] == full.summary["global_step"] == 6 * STEPS_PER_EPOCH
    assert done.summary["epochs"] == full.summary["epochs"]
    assert abs(done.metrics["val/loss"] - full.metrics["val/loss"]) <= 1e-5
    # the same metrics.csv rows (epoch, step) and per-step losses, as if never stopped
    assert [(r["epoch"], r["step"]) for r in done.rows] == [(r["epoch"], r["step"]) for r in full.rows]
    gap = np.max(np.abs(done.step_losses() - full.step_losses()))
    assert gap <= 1e-5, f"3 + 3 epochs vs 6: per-step train/loss differs by {gap:.2e}"
    lrs = lambda r: [float(row["lr"]) for row in r.rows]
    assert lrs(done) == lrs(full) and lrs(done)[-1] < 0.01 * 0.97 ** 40  # the schedule went on
    # callback state came back: the same checkpoint files, the same best
    names = lambda d: sorted(p.name for p in (d / "checkpoints").glob("*.ckpt") if p.name != "interrupted.ckpt")
    assert names(run_dir) == names(full.run_dir)
    assert done.summary["best"] == full.summary["best"]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert done.summary["resumed_from"].endswith("interrupted.ckpt")


def test_resume_from_a_checkpoint_file_starts_a_new_run_dir(target, resume_runs):
    runs = resume_runs(target)
    first, second = runs["two"].ok(), runs["three"].ok()
    assert second.run_dir != first.run_dir
    assert second.summary["global_step"] == 3 * STEPS_PER_EPOCH
    assert [int(r["epoch"]) for r in second.rows] == [3] * (STEPS_PER_EPOCH + 1)  # only the new epoch
    assert second.summary["resumed_from"] == str(first.run_dir / "checkpoints" / "last.ckpt")


def test_resume_mistakes_are_one_line_exit_2(backend, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(iris_spec(tmp_path, max_epochs=1)))
    assert main(["run", str(spec), "--backend", backend, "--resume", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["run", str(spec), "--backend", backend, "--resume", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a" in err[0] and "Traceback" not in err[0]
    run_dir = tmp_path / "one"
    assert main(["run", str(spec), "--backend", backend, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    before = (run_dir / "metrics.csv").read_text()
    assert main(["run", str(spec), "--resume", str(run_dir)]) == 2  # max_epochs reached: nothing to do
    assert "nothing left to train" in capsys.readouterr().err
    assert (run_dir / "metrics.csv").read_text() == before  # untouched
    other = next((b for b in BACKENDS if b != backend), None)
    if other is not None:
        assert main(["run", str(spec), "--backend", other, "--resume", str(run_dir),
                     "--set", "trainer.max_epochs=2"]) == 2
        assert f"used backend {backend}" in capsys.readouterr().err


def test_portable_weights_continue_on_any_backend_with_a_warning(backend, tmp_path, capsys):
    source = BACKENDS[0]
    first = UnifiedTrainer(iris_spec(tmp_path, max_epochs=2), backend=source).fit()
    capsys.readouterr()
    weights = first.run_dir / "checkpoints" / "last.npz"
    spec = iris_spec(tmp_path, max_steps=1)
    spec["optimizer"]["lr"] = 1e-12  # one step that moves nothing: the weights are the loaded ones
    trainer = UnifiedTrainer(spec, backend=backend)
    second = trainer.fit(resume=weights)
    assert "weights only" in capsys.readouterr().err
    assert second.global_step == 1 and second.epochs == 1  # counters start afresh
    loaded, final = np.load(weights), trainer._adapter.get_weights()
    assert set(loaded.files) == set(final)
    assert max(float(np.max(np.abs(loaded[k] - final[k]))) for k in final) <= 1e-6


def test_nan_loss_fails_clearly_and_keeps_the_last_good_checkpoint(backend, tmp_path, capsys):
    spec = iris_spec(tmp_path, max_epochs=4)
    spec["callbacks"] = [{"model_checkpoint": {"monitor": "val/loss", "save_top_k": 1}}]
    trainer = UnifiedTrainer(spec, backend=backend, callbacks=[Poison(2 * STEPS_PER_EPOCH + 2)])
    with pytest.raises(TrainingError, match=r"loss is nan at step 19"):
        trainer.fit()
    summary = json.loads((trainer.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss is nan" in summary["stop_reason"]
    last = np.load(trainer.run_dir / "checkpoints" / "last.npz")
    assert all(np.isfinite(last[k]).all() for k in last.files)  # epoch 2's, not the poisoned weights
    assert summary["epochs"] == 3
    # the CLI: exit 1 and one line
    path = tmp_path / "nan.yaml"
    spec["optimizer"] = {"name": "sgd", "lr": 1e30}
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--backend", backend, "--run-dir", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training failed: loss is" in err[0]
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends to compare")
def test_callbacks_stop_at_the_same_epoch_keep_the_same_files_and_see_the_same_state(tmp_path):
    out = {}
    for b in BACKENDS:
        spec = iris_spec(tmp_path, max_epochs=12)
        spec["callbacks"] = [
            {"early_stopping": {"monitor": "val/accuracy", "mode": "max", "patience": 2, "restore_best_weights": True}},
            {"model_checkpoint": {"monitor": "val/accuracy", "mode": "max", "save_top_k": 2, "every_n_epochs": 2}},
            "lr_monitor", "terminate_on_nan", {"timer": {"max_time": 3600}},
        ]
        trace = Trace()
        trainer = UnifiedTrainer(spec, backend=b, callbacks=[trace])
        result = trainer.fit()
        files = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
        es = next(c for c in trainer._ctx.events.callbacks if isinstance(c, EarlyStopping))
        assert es.best_epoch < result.epochs
        final = trainer._adapter.get_weights()
        assert all(np.array_equal(final[k], es._best_weights[k]) for k in final), b  # best weights restored
        last = np.load(result.run_dir / "checkpoints" / "last.npz")  # checkpoints keep the training weights
        assert not all(np.array_equal(final[k], last[k]) for k in final), b
        out[b] = (result.status, result.epochs, result.global_step, files, trace.log)
    ref = out[BACKENDS[0]]
    assert ref[0] == "stopped_early" and ref[1] < 12
    for b in BACKENDS[1:]:
        assert out[b][:4] == ref[:4], f"{b}: {out[b][:4]} != {ref[:4]}"
        assert out[b][4] == ref[4], f"{b}: TrainState differs from {BACKENDS[0]}"


@pytest.mark.parametrize("fault", ["error", "sigint"])
def test_on_exception_then_on_fit_end_with_the_final_status(backend, tmp_path, fault):
    spec = iris_spec(tmp_path, max_epochs=2)
    trace = Trace()
    cause = Boom(11) if fault == "error" else SignalAt(11, signal.SIGINT)
    trainer = UnifiedTrainer(spec, backend=backend, callbacks=[cause, trace])
    with pytest.raises(TrainingError if fault == "error" else Interrupted):
        trainer.fit()
    status = "failed" if fault == "error" else "interrupted"
    error = "RuntimeError" if fault == "error" else "Interrupted"
    tail = [(h, e, s, st, *x) for h, e, s, _, st, _, *x in trace.log[-3:]]
    if fault == "sigint":  # interrupted.ckpt was saved before the error surfaced
        assert tail[0] == ("checkpoint_saved", 2, 11, "running", "interrupted.ckpt")
    assert tail[-2:] == [("exception", 2, 11, status, error), ("fit_end", 2, 11, status)]
    assert json.loads((trainer.run_dir / "summary.json").read_text())["status"] == status


CTRL_C = '''
import os
import signal
from unified.callbacks import Callback


class CtrlC(Callback):
    def on_train_batch_end(self, state):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)
'''


def test_cli_ctrl_c_saves_and_exits_130(backend, tmp_path, capsys):
    (tmp_path / "ctrlc.py").write_text(CTRL_C)
    spec = iris_spec(tmp_path, max_epochs=2)
    spec["callbacks"] = [{"python": {"target": "ctrlc:CtrlC"}}]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "r"
    assert main(["run", str(path), "--backend", backend, "--run-dir", str(run_dir)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted by SIGINT at epoch 1, step 5" in err[0] and f"--resume {run_dir}" in err[0]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back


# -- a real process killed with SIGTERM mid-epoch, then resumed from the command line -----------------------
SLOW = '''
import time
from unified.callbacks import Callback


class Slow(Callback):
    def on_train_batch_end(self, state):
        time.sleep(0.1)
'''


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unified", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _kill_and_resume(tmp_path: Path, target, check_exit) -> tuple[dict, Path]:
    (tmp_path / "slowcb.py").write_text(SLOW)
    spec = iris_spec(tmp_path, max_epochs=3)
    spec["callbacks"].append({"python": {"target": "slowcb:Slow"}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "killed"
    proc = _cli([str(path), "--run-dir", str(run_dir), *target.run_args()])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        csv_path = run_dir / "metrics.csv"
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > STEPS_PER_EPOCH + 4:  # into epoch 2
            break
        time.sleep(0.05)
    if proc.poll() is not None:  # it ended before the kill
        check_exit(target, "the run to be killed (it ended first)", proc.returncode, proc.communicate()[1], expect=143)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    check_exit(target, "the run killed with SIGTERM", proc.returncode, err, expect=143)
    assert "Traceback" not in err and "SIGTERM" in err and "--resume" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["global_step"] < 3 * STEPS_PER_EPOCH
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
    assert not list(run_dir.rglob(".*.tmp"))
    resumed = _cli([str(path), "--resume", str(run_dir)])  # the run's own backend (and Keras backend)
    out, err = resumed.communicate(timeout=240)
    check_exit(target, "the resumed run", resumed.returncode, err)
    return json.loads((run_dir / "summary.json").read_text()), run_dir


def test_sigterm_mid_epoch_then_resume_from_the_cli(target, tmp_path, run_target):
    """A real process killed with SIGTERM mid-epoch, resumed with `unified run --resume RUN_DIR` alone."""
    summary, run_dir = _kill_and_resume(tmp_path, target, run_target.check_exit)
    assert summary["status"] == "completed" and summary["global_step"] == 3 * STEPS_PER_EPOCH
    assert (summary["backend"], summary["keras_backend"]) == (target.backend, target.variant)
    steps = [int(r["step"]) for r in rows(run_dir) if r["train/loss"]]
    assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))  # every step once: nothing lost, nothing repeated
    # the same as 3 epochs in one go (on this target when this process can host it, else on the reference)
    ref = target if run_target.runs_here(target) else run_target.reference_for(target)
    reference = run_target(ref, iris_spec(tmp_path, max_epochs=3)).ok()
    assert abs(summary["metrics"]["val/loss"] - reference.metrics["val/loss"]) <= 1e-5
    a, b = step_losses(reference.run_dir), step_losses(run_dir)
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-5
