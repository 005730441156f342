"""Fixtures for the tuning tests: a throw-away PostgreSQL server on 127.0.0.1 and a tiny tunable spec."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from unified.registry import installed_backends

TUNE_SPEC: dict[str, Any] = {
    "name": "tt",
    "seed": 0,
    "data": {"source": "sklearn:iris", "standardize": True, "val_fraction": 0.3, "batch_size": 16},
    "model": {"arch": "mlp", "hidden": [16]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "trainer": {"max_epochs": 2, "log_every_n_steps": 5, "progress_bar": False},
    "tune": {
        "n_trials": 4,
        "pruner": "none",
        "space": {"optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 0.1, "log": True}},
    },
}


def _pg_bin() -> Optional[Path]:
    """The folder holding initdb/pg_ctl/postgres (Debian puts them in /usr/lib/postgresql/<v>/bin)."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.path.exists(os.path.join(cand, b)) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(cand)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    return None


def _install_postgres() -> str:
    """Install Debian's postgresql package (root with apt-get only); returns why it could not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and this is not root with apt-get (apt-get install postgresql)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
                       capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        return f"apt-get install postgresql failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://postgres:<pw>@127.0.0.1:<port>/tune``: a fresh server in a temp dir, stopped after.

    As root the server runs as the ``postgres`` user (initdb refuses root). Skipped, with the reason,
    where PostgreSQL cannot be installed or started or psycopg2 is missing.
    """
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install 'unified-trainer[postgres]'")
    import psycopg2

    bindir = _pg_bin()
    if bindir is None:
        why = _install_postgres()
        bindir = _pg_bin()
        if bindir is None:
            pytest.skip(f"cannot start PostgreSQL: {why or 'initdb/pg_ctl not found after installing'}")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="ut-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("cannot start PostgreSQL as root: no 'postgres' user to run it (initdb refuses root)")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else []
        if not as_user:
            pytest.skip("cannot start PostgreSQL as root: runuser is missing")
    password = secrets.token_hex(8)
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        os.chown(root / "pw", pw.pw_uid, pw.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(as_user + args, capture_output=True, text=True, timeout=timeout)

    r = run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={root / 'pw'}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: initdb failed: {r.stderr.strip()[-300:]}")
    opts = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections=50"
    r = run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"])
    if r.returncode != 0:
        detail = log.read_text()[-400:] if log.exists() else r.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: pg_ctl start failed: {detail.strip()}")
    try:
        for _ in range(50):
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                                        dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        else:
            pytest.skip(f"cannot start PostgreSQL: no connection on 127.0.0.1:{port}")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE tune")
        conn.close()
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/tune"
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


@pytest.fixture
def tune_spec(tmp_path: Path):
    """``tune_spec({"tune": {"n_trials": 6}})``: write the tiny iris spec (deep-merged) to a YAML file."""
    import copy

    import yaml

    def _make(changes: Optional[dict[str, Any]] = None, name: str = "spec.yaml") -> Path:
        spec = copy.deepcopy(TUNE_SPEC)
        spec["logging"] = {"dir": str(tmp_path / "runs")}
        _merge(spec, changes or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return _make


@pytest.fixture
def torch_backend() -> str:
    """A torch trainer for the multi-process tests (light to import): ignite, else lightning."""
    pytest.importorskip("optuna", reason="needs optuna: pip install 'unified-trainer[tune]'")
    for name in ("ignite", "lightning"):
        if name in installed_backends():
            return name
    pytest.skip("needs the ignite or lightning backend")
