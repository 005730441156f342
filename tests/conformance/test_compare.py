"""`unified compare` for real: one process per installed backend, then compare.json / compare.md / curves.png."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from unified.compare import installed_targets
from unified.registry import available_backends

TARGETS = {t.name: t for t in installed_targets()}  # what compare runs by default: keras once per tensor backend
BACKENDS = list(TARGETS)

pytestmark = pytest.mark.skipif(len(BACKENDS) < 1, reason="needs an installed backend")

# iris: 150 samples, val 30 -> 120 train, batch 32 -> 4 steps per epoch; SGD so that every backend must agree
# per step within 1e-5 (DESIGN.md: SGD-family equality is judged in absolute terms)
TINY = {
    "name": "tiny-iris",
    "seed": 0,
    "data": {"source": "sklearn:iris", "standardize": True, "val_fraction": 0.2, "batch_size": 32},
    "model": {"arch": "mlp", "hidden": [16]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "trainer": {"max_epochs": 2, "log_every_n_steps": 1},
    "metrics": ["accuracy", "f1_macro"],
    "callbacks": [{"early_stopping": {"monitor": "val/accuracy", "mode": "max", "patience": 5}}],
}
STEPS = 8


def _spec(tmp_path: Path, extra: dict | None = None) -> str:
    spec = {**TINY, "logging": {"dir": str(tmp_path / "runs")}, **(extra or {})}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return str(path)


def _compare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unified", "compare", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _table_rows(md: str) -> dict[str, list[str]]:
    """The markdown table's rows (header included) by first cell, split at unescaped pipes."""
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    return {cells[0]: cells for cells in ([c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in rows)}


def test_compare_all_installed_backends(tmp_path):
    out = tmp_path / "cmp"
    proc = _compare(_spec(tmp_path), "--out", str(out), "--set", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    report = json.loads((out / "compare.json").read_text())
    assert list(report["backends"]) == BACKENDS
    assert report["monitor"] == {"key": "val/accuracy", "mode": "max"}
    assert report["reference"] == BACKENDS[0] and report["overrides"] == ["trainer.max_epochs=2"]
    for name, r in report["backends"].items():
        assert r["status"] == "completed" and r["exit_code"] == 0 and r["error"] is None, (name, r)
        assert r["epochs"] == 2 and r["global_step"] == STEPS
        assert r["run_dir"] == str(out / "runs" / name)
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["backend"] == TARGETS[name].backend == r["backend"]
        if TARGETS[name].variant is not None:  # keras-jax really ran Keras on JAX
            assert summary["keras_backend"] == TARGETS[name].variant == r["keras_backend"]
        assert {"train/loss", "val/loss", "val/accuracy", "val/f1_macro"} <= set(r["metrics"])
        assert r["best"]["monitor"] == "val/accuracy"
        assert r["train_time_s"] > 0 and r["ms_per_step"] == pytest.approx(r["train_time_s"] / STEPS * 1000)
        gap = r["train_loss_gap"]
        assert gap["reference"] == BACKENDS[0] and gap["steps"] == STEPS
        assert gap["max_abs"] <= 1e-5, f"{name} vs {BACKENDS[0]}: per-step train/loss differs by {gap['max_abs']:.2e}"
        assert Path(r["log"]).is_file()
    if {"lightning", "ignite"} <= set(BACKENDS):
        lt, ig = report["backends"]["lightning"], report["backends"]["ignite"]
        assert abs(lt["metrics"]["val/loss"] - ig["metrics"]["val/loss"]) <= 1e-5

    md = (out / "compare.md").read_text()
    assert md in proc.stdout  # the table is printed
    rows = _table_rows(md)
    header = rows.pop("backend")
    assert header[:7] == ["backend", "status", "epochs", "steps", "val/loss", "val/accuracy", "val/f1_macro"]
    assert header[7:9] == ["train time s", "ms/step"] and header[-1].startswith("max \\|Δ train/loss\\|")
    assert list(rows) == BACKENDS
    for name, cells in rows.items():
        assert cells[1:4] == ["completed", "2", str(STEPS)]
        assert cells[4] == f"{report['backends'][name]['metrics']['val/loss']:.4f}"
        assert cells[-1] == "(reference)" if name == BACKENDS[0] else cells[-1].endswith(f"({STEPS} steps)")

    png = out / "curves.png"
    assert _png_size(png) == (1440, 540)  # 12 x 4.5 in at 120 dpi
    assert png.stat().st_size > 20_000
    assert not list(out.rglob(".*.tmp"))  # atomic writes left no temp files


CALLBACK = '''
from unified.callbacks import Callback


class FailOn(Callback):
    def __init__(self, backend):
        self.backend = backend

    def on_epoch_end(self, state):
        if state.backend == self.backend and state.epoch == 2:
            raise RuntimeError(f"deliberate failure on {state.backend}")
'''


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends")
def test_one_failing_backend_does_not_stop_the_others(tmp_path):
    (tmp_path / "failon.py").write_text(textwrap.dedent(CALLBACK))
    bad, good = BACKENDS[1], BACKENDS[0]
    spec = _spec(tmp_path, {"callbacks": [{"python": {"target": "failon:FailOn", "kwargs": {"backend": bad}}}]})
    out = tmp_path / "cmp"
    proc = _compare(spec, "--backends", f"{bad},{good}", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]

    report = json.loads((out / "compare.json").read_text())
    assert list(report["backends"]) == [bad, good]
    b, g = report["backends"][bad], report["backends"][good]
    assert b["status"] == "failed" and b["exit_code"] == 1 and "deliberate failure on" in b["error"]
    assert b["epochs"] == 2 and b["global_step"] == STEPS  # it ran to the failing epoch end
    assert g["status"] == "completed" and g["exit_code"] == 0 and g["error"] is None
    # the failed run still logged its steps: it stays the reference and the gap is still computed
    assert report["reference"] == bad and g["train_loss_gap"]["max_abs"] <= 1e-5

    rows = _table_rows((out / "compare.md").read_text())
    assert rows["backend"][-1] == "error"
    assert rows[bad][1] == "failed (exit 1)" and "deliberate failure on" in rows[bad][-1]
    assert rows[good][1] == "completed" and rows[good][-1] == ""
    assert f"{bad}: failed" in proc.stderr and _png_size(out / "curves.png") == (1440, 540)


def test_bad_backend_name_is_rejected_up_front(tmp_path):
    proc = _compare(_spec(tmp_path), "--backends", f"{BACKENDS[0]},lightnin", "--out", str(tmp_path / "o"),
                    cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "unknown backend 'lightnin'" in err[0], proc.stderr
    assert not (tmp_path / "o").exists() and proc.stdout == ""


@pytest.mark.skipif("keras" in available_backends(), reason="keras is a registered backend here")
def test_keras_variant_rejected_when_keras_is_not_registered(tmp_path):
    proc = _compare(_spec(tmp_path), "--backends", f"{BACKENDS[0]},keras-torch", "--out", str(tmp_path / "o"),
                    cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("unified: error: --backends: unknown backend 'keras-torch'")
    assert not (tmp_path / "o").exists()
