"""Shared fixtures.

Two parametrizations:

- ``backend``: every installed backend, trained **in this process** (tests that inspect in-process objects:
  callback recorders, ``trainer.predict``, adapters). In-process ``keras`` is whatever tensor backend this
  process's Keras uses (``unified.registry.resolve_keras_backend(None)``: tensorflow unless KERAS_BACKEND says
  otherwise, as in the tox env ``keras-torch``).
- ``target``: every installed backend plus every variant of a backend with variants (``keras-tensorflow``,
  ``keras-torch``, ``keras-jax``, each when its tensor library is importable). Tests that judge a run from its
  run directory take ``target`` and train through the ``run_target`` fixture, which runs a target in this
  process when it can (:func:`runs_here`) and otherwise in a subprocess (``python -m unified run SPEC
  --backend keras --keras-backend torch ...``; several specs share one subprocess with ``run_target.many``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytest

from unified.compare import Target, installed_targets
from unified.registry import installed_backends, resolve_keras_backend

BACKENDS = installed_backends()

BASE_SPEC: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 32},
    "model": {"arch": "mlp", "hidden": [32]},
    "optimizer": {"name": "adam", "lr": 0.003},
    "trainer": {"max_epochs": 2, "log_every_n_steps": 5, "progress_bar": False},
}


# -- targets: backends and their variants --------------------------------------------------------------------
def discover_targets() -> list[Target]:
    """Every installed backend; a backend with variants as one target per installed variant (the targets
    ``unified compare`` runs by default: :func:`unified.compare.installed_targets`)."""
    return installed_targets()


TARGETS = discover_targets()
TARGET_NAMES = [t.name for t in TARGETS]


def get_target(name: str) -> Target:
    return next(t for t in TARGETS if t.name == name)


def reference_target() -> Optional[Target]:
    """The target every other one is compared with: ignite, else the plain torch loop, else the first."""
    for name in ("ignite", "torch"):
        if name in TARGET_NAMES:
            return get_target(name)
    return TARGETS[0] if TARGETS else None


def reference_for(target: Target) -> Optional[Target]:
    """Whom ``target`` is compared with: the reference, or for the reference itself the next of ignite /
    torch (a comparison with itself could not fail); None when there is no other."""
    ref = reference_target()
    if ref is not None and ref.name != target.name:
        return ref
    return next((get_target(n) for n in ("ignite", "torch") if n in TARGET_NAMES and n != target.name), None)


# The environment variable that selects a backend's variant for a whole process (Keras reads KERAS_BACKEND
# once, at import; resolve_keras_backend(None) is what this process uses or would use).
VARIANT_ENV = {"keras": "KERAS_BACKEND"}


def process_env(target: Target, env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """What a process's environment must hold to train ``target`` (plus the job's own ``env``)."""
    out = dict(env or {})
    if target.variant is not None:
        out[VARIANT_ENV.get(target.backend, f"{target.backend.upper()}_VARIANT")] = target.variant
    return out


def _env_holds_here(env: Mapping[str, str]) -> bool:
    for key, value in env.items():
        have = resolve_keras_backend(None) if key == "KERAS_BACKEND" else os.environ.get(key)
        if have != value:
            return False
    return True


def runs_here(target: Target, env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``target`` (with a job's ``env``) can train in this process: a backend without variants always
    can; a variant only when it is the one this process uses or would use (Keras picks its tensor backend
    once per process: ``unified.registry.resolve_keras_backend(None)``)."""
    return _env_holds_here(process_env(target, env))


# Failures that are known, tracked elsewhere, and expected to go away: target -> (a line the failing run
# prints on stderr, the reason). A run of that target failing with exactly that line raises KnownTargetBug,
# which the target's xfail mark (raises=KnownTargetBug, strict=False) accepts; any other failure still fails.
KNOWN_BUGS: dict[str, tuple[str, str]] = {}  # none today (keras-jax trains since its fix)


class TargetRunFailed(AssertionError):
    """A target's run ended with another exit code than the test expected (the message ends with stderr)."""


class KnownTargetBug(TargetRunFailed):
    """A TargetRunFailed whose stderr shows the target's entry in KNOWN_BUGS."""


def _allowed(expect: "int | Sequence[int]") -> tuple[int, ...]:
    return (expect,) if isinstance(expect, int) else tuple(expect)


def check_exit(target: Target, what: str, code: Optional[int], stderr: str, expect: "int | Sequence[int]" = 0,
               where: str = "subprocess") -> None:
    """Fail with the exit code and the tail of stderr unless ``code`` is ``expect`` (or one of them);
    KnownTargetBug if the stderr shows the target's known bug."""
    if code in _allowed(expect):
        return
    shown = "not run" if code is None else f"exited {code}"
    msg = (f"{target.name} / {what} ({where}): `unified run` {shown}, expected {expect}\n"
           f"--- stderr (tail) ---\n{stderr[-3000:]}")
    bug = KNOWN_BUGS.get(target.name)
    if bug is not None and bug[0] in stderr:
        raise KnownTargetBug(msg)
    raise TargetRunFailed(msg)


def target_param(target: Target) -> Any:
    marks = []
    if target.name in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(raises=KnownTargetBug, strict=False, reason=KNOWN_BUGS[target.name][1]))
    return pytest.param(target, id=target.name, marks=marks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, ids=BACKENDS)
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", [target_param(t) for t in TARGETS])


# -- run_target: train a spec on a target, here or in a subprocess --------------------------------------------
@dataclass
class Job:
    """One ``unified run``: ``spec`` on ``target`` into the run directory ``<root>/<target>/<name>``.

    ``resume``: an earlier job of the same target by name (its run directory, continued in place) or by a
    path below it (``"first/checkpoints/last.ckpt"``: a new run directory), or an absolute path.
    ``expect``: the exit code this run should end with (or a tuple of them); a batch stops at the first
    run that ends otherwise. ``env``: what the process's environment must hold (e.g.
    ``{"KERAS_BACKEND": "torch"}`` to give a torch trainer a Keras model). ``files``: modules written beside
    the spec (importable by ``python:`` callbacks and factories). ``command``: another ``unified`` command
    instead of ``run`` (``["export", "@first", "--format", "onnx"]``; ``@<job>`` is that job's run
    directory, which the result then reports).
    """

    target: Target
    spec: Optional[dict[str, Any]]
    name: str = "run"
    resume: Optional[str | Path] = None
    args: Sequence[str] = ()
    expect: "int | tuple[int, ...]" = 0
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    command: Optional[Sequence[str]] = None


@dataclass
class RunResult:
    """What one ``unified run`` left: exit code, run directory, summary.json and metrics.csv as they were
    right after this run (a later resume of the same directory does not change them), stdout, stderr."""

    target: Target
    name: str
    exit_code: Optional[int]  # None: not run (an earlier run of its batch failed)
    run_dir: Path
    summary: Optional[dict[str, Any]]
    columns: list[str]
    rows: list[dict[str, str]]
    stdout: str
    stderr: str
    in_process: bool
    expect: "int | tuple[int, ...]" = 0

    def ok(self) -> "RunResult":
        """Assert the run ended as expected (exit 0 unless the job said otherwise); stderr tail otherwise."""
        check_exit(self.target, self.name, self.exit_code, self.stderr, self.expect,
                   "in-process" if self.in_process else "subprocess")
        return self

    def step_rows(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r.get("train/loss")]

    def epoch_rows(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r.get("train/loss_epoch")]

    def step_losses(self):
        import numpy as np

        return np.array([float(r["train/loss"]) for r in self.step_rows()])

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.summary or {}).get("metrics", {})


def _parse_csv(text: Optional[str]) -> tuple[list[str], list[dict[str, str]]]:
    if not text:
        return [], []
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


# The subprocess for several runs: each is `unified run ARGS` (unified.cli.main, what `python -m unified
# run` calls), one after another in this process, stopping at the first unexpected exit code. Each run's
# exit code, output and files are written to OUT after it, so a crash loses nothing already done.
WORKER = r'''
import contextlib, io, json, sys, traceback
from pathlib import Path
jobs = json.loads(Path(sys.argv[1]).read_text())
out_path = Path(sys.argv[2])
from unified.cli import main
done = []
for job in jobs:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(job["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:
            traceback.print_exc()
            code = 1
    read = lambda name: (Path(job["run_dir"]) / name).read_text() if (Path(job["run_dir"]) / name).is_file() else None
    done.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                 "summary": read("summary.json"), "metrics": read("metrics.csv")})
    out_path.write_text(json.dumps(done))
    sys.stderr.write(err.getvalue())
    if code not in job["expect"]:
        break
'''


class TargetRunner:
    """``run_target(target, spec, **job) -> RunResult``; ``run_target.many(jobs) -> {name: RunResult}``.

    Runs whose target (and ``env``) this process can host train here, through ``unified.cli.main`` (which
    builds a ``UnifiedTrainer``), with stdout and stderr captured; the others run in subprocesses: one job
    alone as ``python -m unified run SPEC --backend B [--keras-backend K] ...``, several jobs that can share a
    process in ONE worker (Keras + torch imports cost seconds). Subprocesses start first and run while the
    in-process jobs train. Either way the result is the same RunResult.
    """

    Job = Job  # test modules reach these through the fixture (conftest is not importable by name)
    targets = TARGETS
    reference_for = staticmethod(reference_for)
    runs_here = staticmethod(runs_here)
    check_exit = staticmethod(check_exit)

    def __init__(self, root: Path, cache: Optional[dict[str, dict[str, RunResult]]] = None,
                 timeout: float = 600) -> None:
        self.root = root
        self.cache = cache
        self.timeout = timeout
        self._used: set[tuple[str, str, str]] = set()  # (root, target, job name)

    def __call__(self, target: Target, spec: dict[str, Any], **job: Any) -> RunResult:
        job.setdefault("name", self._fresh_name(target, "run"))
        return self.many([Job(target, spec, **job)])[job["name"]]

    def _fresh_name(self, target: Target, base: str) -> str:
        name, i = base, 1
        while (str(self.root), target.name, name) in self._used:
            i += 1
            name = f"{base}-{i}"
        return name

    def many(self, jobs: Sequence[Job]) -> dict[str, RunResult]:
        """Run every job; jobs that cannot run here share as few subprocesses as their targets allow.

        Results are keyed by job name, or ``"<target>/<name>"`` when the jobs span several targets. On the
        session's ``run_target_shared`` the results are remembered by the jobs' content, so the tests that
        check different things of the same runs train them once.
        """
        jobs = list(jobs)
        key = None
        if self.cache is not None:
            key = hashlib.sha256(json.dumps(
                [[j.target.name, j.name, j.spec, str(j.resume), list(j.args), j.expect, dict(j.env), dict(j.files),
                  j.command]
                 for j in jobs], sort_keys=True, default=str).encode()).hexdigest()[:16]
            if key in self.cache:
                return self.cache[key]
        root = self.root / key if key else self.root
        for j in jobs:
            if (str(root), j.target.name, j.name) in self._used:
                raise ValueError(f"job {j.target.name}/{j.name} given twice")
            self._used.add((str(root), j.target.name, j.name))
        prepared = [self._prepare(j, root) for j in jobs]
        groups: dict[tuple, list] = {}  # the environment a subprocess needs -> its jobs, in order
        here = []
        for p in prepared:
            j = p["job"]
            if runs_here(j.target, j.env):
                here.append(p)
            else:
                groups.setdefault(tuple(sorted(process_env(j.target, j.env).items())), []).append(p)
        # at most one busy process per core: the subprocesses start first (their imports overlap the
        # in-process training), the rest as earlier ones end
        queue = [(dict(env), members, root, i) for i, (env, members) in enumerate(groups.items())]
        slots = max(1, (os.cpu_count() or 2) - (1 if here else 0))
        running = [self._start(*queue.pop(0)) for _ in range(min(slots, len(queue)))]
        results: dict[str, RunResult] = {}
        failed: dict[str, RunResult] = {}  # target -> its first unexpected run (the rest of its jobs are skipped)
        for p in here:
            j = p["job"]
            if j.target.name in failed:
                results[p["key"]] = self._not_run(p, failed[j.target.name])
                continue
            results[p["key"]] = r = self._run_here(p)
            if r.exit_code not in _allowed(j.expect):
                failed[j.target.name] = r
        while running:
            results.update(self._finish(running.pop(0)))
            while queue and len(running) < (os.cpu_count() or 2):
                running.append(self._start(*queue.pop(0)))
        ordered = {p["key"]: results[p["key"]] for p in prepared}
        if len({j.target.name for j in jobs}) == 1:
            ordered = {p["job"].name: r for p, r in zip(prepared, ordered.values())}
        if key is not None:
            self.cache[key] = ordered
        return ordered

    # -- internals ----------------------------------------------------------------------------------------
    def _prepare(self, j: Job, root: Path) -> dict[str, Any]:
        spec_dir = root / j.target.name
        spec_dir.mkdir(parents=True, exist_ok=True)
        for fname, text in j.files.items():
            (spec_dir / fname).write_text(textwrap.dedent(text))
        if j.command is not None:  # another unified command; "@<job>" names that job's run directory
            argv = [str(spec_dir / a[1:]) if a.startswith("@") else a for a in j.command]
            run_dir = next((Path(a) for a in argv if a.startswith(str(spec_dir))), spec_dir / j.name)
            return {"job": j, "argv": argv + list(j.args), "run_dir": run_dir, "spec_dir": spec_dir,
                    "key": f"{j.target.name}/{j.name}"}
        spec = copy.deepcopy(j.spec)
        spec.setdefault("logging", {})
        if not spec["logging"].get("dir"):
            spec["logging"]["dir"] = str(root / "logs")
        spec_path = spec_dir / f"{j.name}.yaml"
        import yaml

        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        argv = ["run", str(spec_path), *j.target.run_args()]
        resume: Optional[Path] = None
        in_place = False
        if isinstance(j.resume, str) and not os.path.isabs(j.resume):  # "<job>", "<job>/checkpoints/last.ckpt"
            resume = spec_dir / j.resume
        elif j.resume is not None:
            resume = Path(j.resume)
        if resume is not None:
            in_place = resume.suffix not in (".ckpt", ".npz")  # a run directory is continued in place
        run_dir = resume if in_place else spec_dir / j.name
        if not in_place:
            argv += ["--run-dir", str(run_dir)]
        if resume is not None:
            argv += ["--resume", str(resume)]
        argv += list(j.args)
        return {"job": j, "argv": argv, "run_dir": run_dir, "spec_dir": spec_dir,
                "key": f"{j.target.name}/{j.name}"}

    def _result(self, p: dict, code: Optional[int], stdout: str, stderr: str, summary: Optional[str],
                metrics: Optional[str], in_process: bool) -> RunResult:
        columns, rows = _parse_csv(metrics)
        j = p["job"]
        return RunResult(j.target, j.name, code, p["run_dir"], json.loads(summary) if summary else None, columns,
                         rows, stdout, stderr, in_process, j.expect)

    def _not_run(self, p: dict, first: RunResult) -> RunResult:
        return self._result(p, None, "", f"not run: {first.target.name} / {first.name} exited {first.exit_code} "
                                         f"first:\n{first.stderr}", None, None, first.in_process)

    def _run_here(self, p: dict) -> RunResult:
        from unified.cli import main

        err, out = io.StringIO(), io.StringIO()
        saved = os.environ.get("KERAS_BACKEND")
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(p["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 2
            finally:  # --keras-backend sets KERAS_BACKEND for this process: put it back
                if saved is None:
                    os.environ.pop("KERAS_BACKEND", None)
                else:
                    os.environ["KERAS_BACKEND"] = saved
        return self._result(p, code, out.getvalue(), err.getvalue(), _read(p["run_dir"] / "summary.json"),
                            _read(p["run_dir"] / "metrics.csv"), True)

    def _start(self, needs: dict[str, str], members: list[dict], root: Path, index: int) -> dict[str, Any]:
        env = {**os.environ, **needs}
        if len(members) == 1:
            cmd = [sys.executable, "-m", "unified", *members[0]["argv"]]
            out_file = None
        else:
            jobs_file = root / f".batch-{index}-{os.getpid()}.json"
            out_file = jobs_file.with_suffix(".out.json")
            jobs_file.write_text(json.dumps([{"argv": p["argv"], "run_dir": str(p["run_dir"]),
                                              "expect": _allowed(p["job"].expect)} for p in members]))
            cmd = [sys.executable, "-c", WORKER, str(jobs_file), str(out_file)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=str(members[0]["spec_dir"]))
        return {"proc": proc, "members": members, "out_file": out_file}

    def _finish(self, started: dict[str, Any]) -> dict[str, RunResult]:
        proc, members, out_file = started["proc"], started["members"], started["out_file"]
        timeout = self.timeout
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += f"\n[run_target: killed after {timeout:.0f}s]"
        results: dict[str, RunResult] = {}
        if out_file is None:
            p = members[0]
            results[p["key"]] = self._result(p, proc.returncode, stdout, stderr, _read(p["run_dir"] / "summary.json"),
                                             _read(p["run_dir"] / "metrics.csv"), False)
            return results
        done = json.loads(_read(out_file) or "[]")
        first_bad: Optional[RunResult] = None
        for i, p in enumerate(members):
            if i < len(done):
                d = done[i]
                r = self._result(p, d["code"], d["stdout"], d["stderr"], d["summary"], d["metrics"], False)
                if r.exit_code not in _allowed(p["job"].expect) and first_bad is None:
                    first_bad = r
            elif first_bad is not None:
                r = self._not_run(p, first_bad)
            else:  # the worker died (or was killed) during this job
                r = self._result(p, proc.returncode if proc.returncode != 0 else None, stdout, stderr,
                                 _read(p["run_dir"] / "summary.json"), _read(p["run_dir"] / "metrics.csv"), False)
                first_bad = r
            results[p["key"]] = r
        return results


def run_processes(jobs: Mapping[str, Sequence[str]], *, env: Mapping[str, str], cwd: "str | Path",
                  timeout: float = 900) -> dict[str, tuple[Optional[int], str, str]]:
    """Start every job at once (each in its own session), wait for each, killing one that outlives ``timeout``.

    Returns:
        name -> ``(returncode, stdout, stderr)``; a killed job's stderr ends with a line saying so.
    """
    procs = {name: subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=dict(env), cwd=str(cwd), start_new_session=True)
             for name, cmd in jobs.items()}
    out: dict[str, tuple[Optional[int], str, str]] = {}
    try:
        for name, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                stderr += f"\n[run_processes: {name} killed after {timeout:.0f}s]"
            out[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return out


@pytest.fixture(scope="session")
def processes() -> Any:
    """:func:`run_processes`, for tests that run several scripts side by side."""
    return run_processes


@pytest.fixture
def run_target(tmp_path: Path) -> TargetRunner:
    """Train a spec dict on a target (here or in a subprocess); see TargetRunner."""
    return TargetRunner(tmp_path / "targets")


@pytest.fixture(scope="session")
def run_target_shared(tmp_path_factory: pytest.TempPathFactory) -> TargetRunner:
    """Like run_target, but ``many(jobs)`` is remembered for the session by the jobs' content: the tests of a
    module that check different things of one batch of runs train it once per target (one subprocess)."""
    return TargetRunner(tmp_path_factory.mktemp("shared-targets"), cache={})


# per-step agreement gaps the tests measured, printed at the end of the session (target -> {case: gap})
AGREEMENT: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="session")
def agreement_gaps() -> dict[str, dict[str, float]]:
    """``agreement_gaps.setdefault(target, {})[case] = gap``: shown in the terminal summary."""
    return AGREEMENT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not AGREEMENT:
        return
    ref = reference_target()
    terminalreporter.write_sep("-", f"max per-step train/loss gap vs {ref.name if ref else '?'}")
    for target, cases in sorted(AGREEMENT.items()):
        terminalreporter.write_line(f"{target:18s} " + "  ".join(f"{c}={g:.2e}" for c, g in sorted(cases.items())))


@pytest.fixture
def make_spec(tmp_path: Path):
    """``make_spec({"trainer": {"max_epochs": 3}})``: the small digits spec, deep-merged with changes."""

    def _make(changes: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = copy.deepcopy(BASE_SPEC)
        spec["logging"] = {"dir": str(tmp_path / "runs")}
        _merge(spec, changes or {})
        return spec

    return _make


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


USER_CODE = '''
import numpy as np
from unified.callbacks import Callback
from unified.metrics import Metric


class Recorder(Callback):
    """Records every hook call as (hook, epoch, global_step)."""
    log = []

    def __init__(self, tag="rec"):
        self.tag = tag
        Recorder.log = []

    def on_fit_start(self, state): Recorder.log.append(("fit_start", state.epoch, state.global_step))
    def on_epoch_start(self, state): Recorder.log.append(("epoch_start", state.epoch, state.global_step))
    def on_train_batch_end(self, state): Recorder.log.append(("batch_end", state.epoch, state.global_step))
    def on_validation_end(self, state, metrics): Recorder.log.append(("validation_end", state.epoch, state.global_step))
    def on_epoch_end(self, state): Recorder.log.append(("epoch_end", state.epoch, state.global_step))
    def on_checkpoint_saved(self, state, path): Recorder.log.append(("checkpoint_saved", state.epoch, state.global_step))
    def on_fit_end(self, state): Recorder.log.append(("fit_end", state.epoch, state.global_step))


class Exploder(Callback):
    def on_epoch_end(self, state):
        if state.epoch == 2:
            raise RuntimeError("boom at epoch 2")


class TopTwo(Metric):
    """Top-2 accuracy."""
    name = "top2"

    def reset(self):
        self.hits = 0
        self.n = 0

    def update(self, outputs, targets):
        top = np.argsort(outputs, axis=1)[:, -2:]
        self.hits += int((top == targets[:, None]).any(axis=1).sum())
        self.n += len(targets)

    def compute(self):
        return self.hits / self.n


def make_net(in_features, num_classes, width=16):
    import torch
    return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes))


def make_keras_net(in_features, num_classes, width=16):
    import keras
    return keras.Sequential([keras.layers.Dense(width, activation="relu"), keras.layers.Dense(num_classes)])


def make_not_a_module(in_features, num_classes):
    return object()


def xy_data(n=120):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    return x, y
'''


@pytest.fixture
def native_factory(backend: str) -> str:
    """The name of the ``ut_user_code`` factory that builds a model the backend trains natively."""
    if backend == "keras":
        import os
        import sys

        kb = sys.modules["keras"].backend.backend() if "keras" in sys.modules else os.environ.get("KERAS_BACKEND", "tensorflow")
        return "make_net" if kb == "torch" else "make_keras_net"
    return "make_net"


@pytest.fixture(scope="session")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user module ``ut_user_code`` (callbacks, a metric, model factories) importable by name."""
    d = tmp_path_factory.mktemp("usercode")
    (d / "ut_user_code.py").write_text(textwrap.dedent(USER_CODE))
    sys.path.insert(0, str(d))
    return "ut_user_code"
