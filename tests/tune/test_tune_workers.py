"""Several worker processes sharing one study: exactly N trials, no duplicates, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from unified.tune import storage_url  # noqa: E402

N = 4


def _unified(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "unified", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def _check_study(storage: str, name: str, n: int) -> list:
    study = optuna.load_study(study_name=name, storage=storage_url(storage))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(n)), f"expected trials 0..{n - 1} exactly once, got {sorted(numbers)}"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    param_sets = {tuple(sorted(t.params.items())) for t in trials}
    assert len(param_sets) == n, f"duplicate parameter sets: {[t.params for t in trials]}"
    for t in trials:  # each trial is a normal run directory that knows its trial
        run_dir = Path(t.user_attrs["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        info = json.loads((run_dir / "tune.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 2
        assert info["trial"] == t.number and info["state"] == "complete"
        assert info["params"] == t.params and info["value"] == pytest.approx(t.value)
        assert run_dir.name.startswith(f"trial-{t.number}-")
    return trials


def test_two_local_workers_share_a_sqlite_study(tune_spec, tmp_path: Path, torch_backend: str) -> None:
    spec = tune_spec()
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    r = _unified("tune", str(spec), "--backend", torch_backend, "--workers", "2", "--n-trials", str(N),
                 "--storage", storage, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _check_study(storage, "tt", N)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) <= 2 and os.getpid() not in pids
    assert "[worker 1]" in r.stdout or "[worker 2]" in r.stdout
    csv_rows = (tmp_path / "runs" / "tt" / "tune" / "tt" / "trials.csv").read_text().strip().splitlines()
    assert len(csv_rows) == N + 1


def test_two_workers_on_two_machines_share_a_postgresql_study(tune_spec, tmp_path: Path, postgres_url: str,
                                                              capsys, torch_backend: str) -> None:
    """Two ``--worker-only`` processes started at once on a fresh database (as on two machines: one
    creates the study, the other joins it), then a report from a third process."""
    spec = tune_spec()
    cmd = [sys.executable, "-m", "unified", "tune", str(spec), "--backend", torch_backend, "--n-trials", str(N),
           "--storage", postgres_url, "--study-name", "pg-study", "--worker-only"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two "machines" on this one: one core each
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert postgres_url.split("@")[0].split(":")[-1] not in "".join(o + e for o, e in outs)  # password hidden
    _check_study(postgres_url, "pg-study", N)
    from unified.cli import main

    # Nothing left to run: joining now only writes the report (in this process: no framework needed).
    assert main(["tune", str(spec), "--backend", torch_backend, "--n-trials", str(N), "--storage", postgres_url,
                 "--study-name", "pg-study", "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert f"study pg-study: {N} complete" in printed and "\ntrial " not in printed, printed
    _check_study(postgres_url, "pg-study", N)
    assert (tmp_path / "report" / "best.yaml").exists()


CLAIMER = r"""
import json, os, sys, time
import optuna
from unified.tune import claim, open_storage
study = optuna.load_study(study_name="claims", storage=open_storage(sys.argv[1]))
taken = []
while (trial := claim(study)) is not None:
    taken.append(trial.number)
    study.tell(trial, float(trial.number))
print(json.dumps(taken))
"""


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_racing_workers_take_each_queued_trial_once(db: str, tmp_path: Path, request) -> None:
    """Three processes claim from one queue as fast as they can (no training): every trial exactly once."""
    storage = f"sqlite:///{tmp_path / 'claims.db'}" if db == "sqlite" else request.getfixturevalue("postgres_url")
    n = 30
    from unified.tune import open_storage

    study = optuna.create_study(study_name="claims", storage=open_storage(storage))
    for _ in range(n):
        study.enqueue_trial({})
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, storage], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    taken = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    flat = sorted(x for t in taken for x in t)
    assert flat == list(range(n)), f"claimed {flat}"
    trials = optuna.load_study(study_name="claims", storage=storage_url(storage)).trials
    assert len(trials) == n and all(t.state.name == "COMPLETE" for t in trials)
