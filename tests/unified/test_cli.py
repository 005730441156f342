"""The `unified` command: bad input exits 2 with ONE line on stderr, no traceback; `backends`; argument errors.

Runs without any training backend installed: `validate` is pointed at an installed backend when there is
one, else at a registered one (validate then adds a "not installed" note and still checks spec and data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unified
from unified.cli import main
from unified.registry import available_backends, installed_backends

INSTALLED = installed_backends()
REGISTERED = list(available_backends())
MISSING = [b for b in REGISTERED if b not in INSTALLED]
VALIDATE_BACKEND = (INSTALLED or REGISTERED)[0]
PROJECT_ROOT = str(Path(unified.__file__).resolve().parents[1])
IRIS = "data: {source: 'sklearn:iris'}\n"


@pytest.fixture
def write_spec(tmp_path):
    def _write(text: str, name: str = "spec.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    return _write


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    # validate puts the spec folder and "." on sys.path to import user code; keep that out of other tests
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``unified *argv`` in-process; argparse errors (SystemExit) count as a return code too."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def validate(capsys, spec: str, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "validate", spec, "--backend", VALIDATE_BACKEND, *extra)


def assert_bad_input(code: int, out: str, err: str, *parts: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr holding every part, no traceback."""
    assert code == 2, (code, out, err)
    assert out == "", out
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line, got {err!r}"
    line = err.rstrip("\n")
    assert line.startswith("unified"), line
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


# -- malformed specs: one table ------------------------------------------------------------------------

# (id, YAML text, substrings the one line must contain besides the file name)
MALFORMED = [
    ("duplicate-key", IRIS + "trainer: {max_epochs: 2}\ntrainer: {max_epochs: 3}\n", ["duplicate key 'trainer'", "line"]),
    ("no-epochs-no-steps", IRIS + "trainer: {max_epochs: null}\n", ["trainer", "max_epochs or max_steps"]),
    # unknown keys, with a did-you-mean suggestion
    ("unknown-top-key", "optimzer: {lr: 0.1}\n" + IRIS, ["unknown key 'optimzer'", "did you mean 'optimizer'"]),
    ("unknown-nested-key", IRIS + "optimizer: {lrr: 0.1}\n", ["optimizer", "'lrr'", "did you mean 'lr'"]),
    ("unknown-callback-key", IRIS + "callbacks:\n  - early_stopping: {patiense: 3}\n",
     ["callbacks[0].early_stopping", "'patiense'", "did you mean 'patience'"]),
    ("unknown-callback-kind", IRIS + "callbacks:\n  - early_stoping: {patience: 3}\n",
     ["callbacks[0]", "'early_stoping'", "did you mean 'early_stopping'"]),
    ("unknown-python-ref-key", IRIS + "callbacks: [{python: {target: 'a:b', kwarg: {}}}]\n",
     ["callbacks[0].python", "'kwarg'", "did you mean 'kwargs'"]),
    # wrong types
    ("wrong-type-int", IRIS + "trainer: {max_epochs: ten}\n", ["trainer.max_epochs", "integer", "'ten'"]),
    ("wrong-type-float-for-int", IRIS + "trainer: {max_epochs: 1.5}\n", ["trainer.max_epochs", "integer"]),
    ("wrong-type-number", IRIS + "optimizer: {lr: fast}\n", ["optimizer.lr", "number", "'fast'"]),
    ("wrong-type-bool", "data: {source: 'sklearn:iris', shuffle: maybe}\n", ["data.shuffle", "true or false"]),
    ("wrong-type-mapping", "data: sklearn:iris\n", ["data", "mapping"]),
    ("wrong-type-list", IRIS + "metrics: accuracy\n", ["metrics", "list"]),
    ("callbacks-not-a-list", IRIS + "callbacks: {early_stopping: {}}\n", ["callbacks", "list"]),
    ("callback-two-kinds", IRIS + "callbacks: [{early_stopping: {}, model_checkpoint: {}}]\n",
     ["callbacks[0]", "exactly one key"]),
    # out of range
    ("negative-lr", IRIS + "optimizer: {lr: -0.5}\n", ["optimizer.lr", "> 0", "-0.5"]),
    ("batch-size-0", "data: {source: 'sklearn:iris', batch_size: 0}\n", ["data.batch_size", "> 0", "0"]),
    ("val-fraction-1.5", "data: {source: 'sklearn:iris', val_fraction: 1.5}\n", ["data.val_fraction", "< 1", "1.5"]),
    ("fractions-sum", "data: {source: 'sklearn:iris', val_fraction: 0.6, test_fraction: 0.5}\n",
     ["data", "val_fraction + test_fraction", "< 1"]),
    ("negative-seed", "seed: -1\n" + IRIS, ["seed", ">= 0", "-1"]),
    ("dropout-1", IRIS + "model: {dropout: 1.0}\n", ["model.dropout", "< 1"]),
    ("zero-width", IRIS + "model: {hidden: [64, 0]}\n", ["model.hidden", "> 0", "index 1"]),
    ("beta-1.5", IRIS + "optimizer: {betas: [0.9, 1.5]}\n", ["optimizer.betas", "[0, 1)"]),
    ("timer-missing-max-time", IRIS + "callbacks: [{timer: {}}]\n", ["callbacks[0].timer.max_time", "missing"]),
    ("missing-data", "name: x\n", ["data", "required"]),
    # unknown names
    ("unknown-backend", "backend: ignit\n" + IRIS, ["backend", "unknown backend 'ignit'", "did you mean 'ignite'"]),
    ("unknown-metric", IRIS + "metrics: [accuracy, acuracy]\n",
     ["metrics[1]", "unknown metric 'acuracy'", "did you mean 'accuracy'"]),
    ("metric-wrong-task", IRIS + "metrics: [mse]\n", ["metrics[0]", "'mse'", "task 'classification'"]),
    ("unknown-arch", IRIS + "model: {arch: mpl}\n", ["model.arch", "'mpl'", "did you mean 'mlp'"]),
    ("arch-and-factory", IRIS + "model: {arch: mlp, factory: 'a:b'}\n", ["model", "either 'arch' or 'factory'"]),
    ("bad-factory-target", IRIS + "model: {factory: build}\n", ["model.factory", "'<module>:<name>'"]),
    ("unknown-sklearn-dataset", "data: {source: 'sklearn:digit'}\n",
     ["data.source", "unknown sklearn dataset 'digit'", "did you mean 'digits'"]),
    ("unknown-data-scheme", "data: {source: 'hdf5:x.h5'}\n", ["data.source", "scheme", "csv"]),
    ("unknown-precision", IRIS + "trainer: {precision: fp8}\n", ["trainer.precision", "'fp8'", "bf16-mixed"]),
    ("unknown-task", "task: clasification\n" + IRIS, ["task", "did you mean 'classification'"]),
    ("unknown-optimizer", IRIS + "optimizer: {name: adamm}\n", ["optimizer.name", "did you mean 'adam'"]),
    ("unknown-scheduler", IRIS + "scheduler: {name: cosin}\n", ["scheduler.name", "did you mean 'cosine'"]),
    ("unknown-logger", IRIS + "logging: {loggers: [wandb]}\n", ["logging.loggers[0]", "'wandb'", "tensorboard"]),
    ("unknown-export-format", IRIS + "export: {formats: [onnx, pt]}\n", ["export.formats[1]", "'pt'", "torchscript"]),
    ("loss-wrong-task", IRIS + "loss: mse\n", ["loss", "'mse'", "cross_entropy"]),
    ("momentum-with-adam", IRIS + "optimizer: {name: adam, momentum: 0.9}\n", ["optimizer", "momentum", "sgd"]),
    ("bad-name", "name: my run\n" + IRIS, ["name", "'my run'", "folder"]),
    # not a logged key
    ("monitor-not-logged", IRIS + "callbacks:\n  - early_stopping: {monitor: val/acc}\n",
     ["callbacks[0].early_stopping.monitor", "not a logged key 'val/acc'", "did you mean 'val/accuracy'"]),
    ("checkpoint-monitor-not-logged",
     IRIS + "callbacks:\n  - lr_monitor\n  - model_checkpoint: {monitor: val_loss}\n",
     ["callbacks[1].model_checkpoint.monitor", "not a logged key", "did you mean 'val/loss'"]),
    ("plateau-monitor-not-logged", IRIS + "scheduler: {name: reduce_on_plateau, monitor: val/los}\n",
     ["scheduler.monitor", "not a logged key", "did you mean 'val/loss'"]),
    # not a spec at all
    ("invalid-yaml", "data: {source: 'sklearn:iris'\n", ["invalid YAML", "line 2"]),
    ("invalid-yaml-indent", "data:\n  source: x\n bad: 1\n", ["invalid YAML", "line 3"]),
    ("invalid-yaml-tab", "data:\n\tsource: x\n", ["invalid YAML", "line 2"]),
    ("empty-file", "", ["empty", "mapping"]),
    ("only-a-comment", "# nothing here yet\n", ["no settings", "mapping"]),
    ("top-level-list", "- data: {source: 'sklearn:iris'}\n", ["mapping at the top level", "list"]),
    ("top-level-scalar", "42\n", ["mapping at the top level", "int"]),
]

FORMERLY_BUGS = {
    "metric-python-bad-target": pytest.param(
        IRIS + "metrics: [accuracy, {python: {target: nocolon}}]\n",
        ["metrics[1].python.target", "'<module>:<name>'"],
        id="metric-python-bad-target",
    ),
    "metric-python-key-typo": pytest.param(
        IRIS + "metrics: [{pyton: {target: 'a:b'}}]\n",
        ["metrics[0]", "'pyton'", "did you mean 'python'"],
        id="metric-python-key-typo",
    ),
}


@pytest.mark.parametrize(
    "text, expected",
    [pytest.param(text, expected, id=case_id) for case_id, text, expected in MALFORMED] + list(FORMERLY_BUGS.values()),
)
def test_malformed_spec_exits_2_with_one_line(capsys, write_spec, text, expected):
    path = write_spec(text)
    code, out, err = validate(capsys, path)
    assert_bad_input(code, out, err, path, *expected)


@pytest.mark.parametrize("case_id", ["negative-lr", "unknown-top-key", "invalid-yaml", "monitor-not-logged"])
def test_run_rejects_a_malformed_spec_before_training(capsys, write_spec, tmp_path, case_id):
    _, text, expected = next(c for c in MALFORMED if c[0] == case_id)
    path = write_spec(text)
    code, out, err = cli(capsys, "run", path, "--backend", VALIDATE_BACKEND)
    assert_bad_input(code, out, err, path, *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no run directory was made


def test_toml_spec_errors_name_the_file(capsys, write_spec):
    path = write_spec('[data]\nsource = "sklearn:iris"\n[trainer]\nmax_epochs = "ten"\n', name="spec.toml")
    assert_bad_input(*validate(capsys, path), path, "trainer.max_epochs", "integer")
    path = write_spec('[data\nsource = "sklearn:iris"\n', name="broken.toml")
    assert_bad_input(*validate(capsys, path), path, "invalid TOML")


# -- problems found by loading data and imports (validate) ---------------------------------------------

def test_missing_data_file(capsys, write_spec):
    path = write_spec("task: regression\ndata: {source: 'csv:data/missing.csv', target: y}\n")
    assert_bad_input(*validate(capsys, path), path, "data.source", "not found", "missing.csv")


def test_factory_that_cannot_be_imported(capsys, write_spec):
    path = write_spec(IRIS + "model: {factory: 'nonexistent_mod:build'}\n")
    assert_bad_input(*validate(capsys, path), path, "model.factory", "cannot import", "nonexistent_mod")


def test_factory_attribute_that_does_not_exist(capsys, write_spec, tmp_path):
    (tmp_path / "ut_cli_models.py").write_text("def build(in_features, num_classes):\n    return None\n")
    path = write_spec(IRIS + "model: {factory: 'ut_cli_models:biuld'}\n")
    assert_bad_input(*validate(capsys, path), path, "model.factory", "no attribute", "biuld")


def test_user_metric_that_cannot_be_imported(capsys, write_spec):
    path = write_spec(IRIS + "metrics: [accuracy, {python: {target: 'nonexistent_mod:Metric'}}]\n")
    assert_bad_input(*validate(capsys, path), path, "metrics[1]", "cannot import", "nonexistent_mod")


def test_user_callback_that_cannot_be_imported(capsys, write_spec):
    path = write_spec(IRIS + "callbacks: [{python: {target: 'nonexistent_mod:Callback'}}]\n")
    assert_bad_input(*validate(capsys, path), path, "callbacks[0].python", "cannot import", "nonexistent_mod")


def test_spec_file_that_does_not_exist(capsys, tmp_path):
    path = str(tmp_path / "nope.yaml")
    assert_bad_input(*validate(capsys, path), path, "not found")
    code, out, err = cli(capsys, "run", path)
    assert_bad_input(code, out, err, path, "not found")


def test_spec_path_that_is_a_directory(capsys, tmp_path):
    assert_bad_input(*validate(capsys, str(tmp_path)), str(tmp_path), "directory")


# -- argument errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("item", ["trainer.max_epochs", "=5"])
def test_set_without_key_value(capsys, write_spec, item):
    path = write_spec(IRIS)
    assert_bad_input(*validate(capsys, path, "--set", item), path, "--set", "key=value", repr(item))


@pytest.mark.parametrize(
    "item, expected",
    [
        ("trainer.max_epochs=ten", ["trainer.max_epochs", "integer", "'ten'"]),
        ("optimizer.lrr=0.1", ["optimizer", "did you mean 'lr'"]),
        ("callbacks.3.early_stopping.patience=5", ["callbacks.3", "index below 1"]),
        ("data.source.path=x", ["data.source", "not a mapping"]),
    ],
)
def test_bad_set_values(capsys, write_spec, item, expected):
    path = write_spec(IRIS + "callbacks: [{early_stopping: {patience: 2}}]\n")
    assert_bad_input(*validate(capsys, path, "--set", item), path, *expected)


def test_set_index_into_a_missing_list(capsys, write_spec):
    # the override builds {"0": {...}} where a list is expected; the line still names the field
    path = write_spec(IRIS)
    code, out, err = validate(capsys, path, "--set", "callbacks.0.early_stopping.patience=5")
    assert_bad_input(code, out, err, path, "callbacks", "list")


def test_unknown_backend_option(capsys, write_spec):
    path = write_spec(IRIS)
    code, out, err = cli(capsys, "validate", path, "--backend", "tensorflw")
    assert_bad_input(code, out, err, path, "backend", "unknown backend 'tensorflw'", *REGISTERED)


def test_keras_backend_is_ignored_by_the_torch_trainers(capsys, write_spec):
    # `unified compare` passes one spec to every backend: keras_backend only matters to backend keras.
    path = write_spec(IRIS + "keras_backend: torch\n")
    code, out, err = validate(capsys, path)
    assert code == 0, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["frobnicate"], ["invalid choice", "frobnicate"]),
        ([], ["required", "COMMAND"]),
        (["validate"], ["required", "spec"]),
        (["validate", "x.yaml", "--keras-backend", "theano"], ["invalid choice", "theano"]),
        (["validate", "x.yaml", "--set"], ["--set", "expected one argument"]),
        (["backends", "--yaml"], ["unrecognized arguments", "--yaml"]),
    ],
    ids=["unknown-subcommand", "no-subcommand", "no-spec", "bad-keras-backend", "set-without-value", "bad-flag"],
)
def test_argument_errors_exit_2_with_one_line(capsys, argv, expected):
    assert_bad_input(*cli(capsys, *argv), *expected)


def test_help_exits_0(capsys):
    code, out, err = cli(capsys, "--help")
    assert code == 0 and "validate" in out and "backends" in out and err == ""


# -- --debug -------------------------------------------------------------------------------------------

def test_debug_after_the_subcommand_shows_the_traceback(capsys, tmp_path):
    path = str(tmp_path / "nope.yaml")
    code, out, err = cli(capsys, "validate", path, "--backend", VALIDATE_BACKEND, "--debug")
    assert code == 2 and "Traceback" in err and "SpecError" in err
    assert err.rstrip("\n").splitlines()[-1] == f"unified: error: {path}: spec file not found"


def test_debug_before_the_subcommand_shows_the_traceback(capsys, tmp_path):
    path = str(tmp_path / "nope.yaml")
    code, out, err = cli(capsys, "--debug", "validate", path, "--backend", VALIDATE_BACKEND)
    assert code == 2 and "Traceback" in err


# -- validate success paths ----------------------------------------------------------------------------

def test_validate_ok(capsys, write_spec):
    path = write_spec(IRIS + "callbacks: [{early_stopping: {monitor: val/accuracy, mode: max}}]\n")
    code, out, err = validate(capsys, path)
    assert code == 0 and err == "", err
    first = out.splitlines()[0]
    assert first.startswith(f"{path}: OK") and f"backend {VALIDATE_BACKEND}" in first and "4 features" in first


def test_validate_ok_toml_with_set(capsys, write_spec):
    path = write_spec('[data]\nsource = "sklearn:wine"\n[trainer]\nmax_epochs = 2\n', name="spec.toml")
    code, out, err = validate(capsys, path, "--set", "data.test_fraction=0.1", "--set", "metrics=[accuracy]")
    assert code == 0 and err == "", err
    assert "13 features" in out and "test" in out


@pytest.mark.skipif(not INSTALLED, reason="no training backend installed")
@pytest.mark.parametrize("name", INSTALLED)
def test_validate_with_an_installed_backend_has_no_note(capsys, write_spec, name):
    path = write_spec(IRIS)
    code, out, err = cli(capsys, "validate", path, "--backend", name)
    assert code == 0 and err == "" and "note:" not in out and f"backend {name}" in out


@pytest.mark.skipif(not MISSING, reason="every registered backend is installed")
def test_validate_with_a_missing_backend_notes_the_install_hint(capsys, write_spec):
    path = write_spec(IRIS)
    code, out, err = cli(capsys, "validate", path, "--backend", MISSING[0])
    assert code == 0 and err == ""
    assert f"note: backend {MISSING[0]!r} is not installed" in out and "pip install" in out


@pytest.mark.skipif(bool(INSTALLED), reason="a training backend is installed")
def test_validate_without_any_backend_says_what_to_install(capsys, write_spec):
    path = write_spec(IRIS)
    code, out, err = cli(capsys, "validate", path)
    assert_bad_input(code, out, err, path, "no training backend is installed", "pip install")


# -- backends -----------------------------------------------------------------------------------------

def test_backends_lists_every_registered_backend(capsys):
    code, out, err = cli(capsys, "backends")
    assert code == 0 and err == ""
    listed = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line[0].isspace()}
    assert set(listed) == set(REGISTERED)
    for name in REGISTERED:
        assert listed[name] == ("installed" if name in INSTALLED else "missing")


def test_backends_json(capsys):
    code, out, err = cli(capsys, "backends", "--json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["name"] for r in rows] == REGISTERED
    for row in rows:
        assert row["installed"] is (row["name"] in INSTALLED)
        assert "pip install" in row["install"]
        if row["installed"]:
            assert row["versions"] and isinstance(row["features"], list) and isinstance(row["not_yet"], list)


# -- the real command, in a subprocess ------------------------------------------------------------------

def run_unified(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "unified", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_subprocess_bad_spec_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {source: 'sklearn:iris'}\noptimizer: {lrr: 0.1}\n")
    proc = run_unified("validate", str(path), "--backend", VALIDATE_BACKEND, "--set", "trainer.max_epochs=3",
                       cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert str(path) in proc.stderr and "optimizer" in proc.stderr and "did you mean 'lr'" in proc.stderr


def test_subprocess_unknown_subcommand_exits_2_without_traceback(tmp_path):
    proc = run_unified("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "invalid choice: 'frobnicate'" in proc.stderr
