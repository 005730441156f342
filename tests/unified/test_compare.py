"""`unified compare`: bad input exits 2 with ONE line before any backend process starts; backend-name
parsing (incl. ``keras-<tensor backend>``); the report's pure parts. Needs no training backend: nothing
here trains (``subprocess.run`` is made to fail the test if compare tried to start a run).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import unified.compare as compare_mod
import unified.registry as registry
from unified.cli import main
from unified.compare import Target, installed_targets, loss_gap, markdown, parse_targets
from unified.errors import BackendUnavailableError, SpecError
from unified.registry import BackendEntry

GOOD = """\
name: cmp
data: {source: 'sklearn:iris'}
trainer: {max_epochs: 1}
"""

# "json" is importable everywhere, "no_such_framework_xyz" nowhere: registries independent of this machine
FAKE_INSTALLED = ("json",)
FAKE_MISSING = ("no_such_framework_xyz",)


def _entries(missing_variants: tuple[str, ...] = (), **requires: tuple[str, ...]) -> dict[str, BackendEntry]:
    from unified.registry import BUILTIN_BACKENDS

    def variant(name: str):  # a built-in backend's variants (keras: its tensor backends) come along, each
        real = BUILTIN_BACKENDS[name].variant if name in BUILTIN_BACKENDS else None  # installed unless named
        if real is None:
            return None
        return dataclasses.replace(real, requires=lambda v: FAKE_MISSING if v in missing_variants else FAKE_INSTALLED)

    return {n: BackendEntry(n, f"unified.adapters.{n}:X", req, n, variant(n)) for n, req in requires.items()}


@pytest.fixture(autouse=True)
def _no_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def _refuse(*a, **k):
        raise AssertionError(f"compare started a process on bad input: {a!r}")

    monkeypatch.setattr(compare_mod.subprocess, "run", _refuse)


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return str(path)


@pytest.fixture
def registered(monkeypatch):
    """``registered(lightning=FAKE_INSTALLED, ...)`` replaces the registry's backend list."""

    def _set(missing_variants: tuple[str, ...] = (), **requires: tuple[str, ...]) -> None:
        entries = _entries(missing_variants, **requires)
        monkeypatch.setattr(registry, "available_backends", lambda: dict(entries))

    return _set


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- bad input: exit 2, one line, nothing written ------------------------------------------------------------
def test_unknown_backend_name(capsys, spec, tmp_path, registered):
    registered(ignite=FAKE_INSTALLED, lightning=FAKE_INSTALLED)
    code, out, err = cli(capsys, "compare", spec, "--backends", "ignite,lightnin", "--out", str(tmp_path / "o"))
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert line == ("unified: error: --backends: unknown backend 'lightnin'; did you mean 'lightning'? "
                    "(expected one of: ignite, lightning)")
    assert not (tmp_path / "o").exists()


def test_keras_variant_rejected_when_keras_not_registered(capsys, spec, registered):
    registered(ignite=FAKE_INSTALLED, lightning=FAKE_INSTALLED)
    code, _, err = cli(capsys, "compare", spec, "--backends", "lightning,keras-torch")
    line = one_error_line(err)
    assert code == 2 and "unknown backend 'keras-torch'" in line and "(expected one of: ignite, lightning)" in line


def test_unknown_keras_tensor_backend_lists_the_variants(capsys, spec, registered):
    registered(lightning=FAKE_INSTALLED, keras=FAKE_INSTALLED)
    code, _, err = cli(capsys, "compare", spec, "--backends", "keras-troch")
    line = one_error_line(err)
    assert code == 2 and "did you mean 'keras-torch'?" in line
    assert "(expected one of: lightning, keras, keras-tensorflow, keras-torch, keras-jax)" in line


def test_registered_but_not_installed_backend(capsys, spec, registered):
    registered(lightning=FAKE_INSTALLED, keras=FAKE_MISSING)
    code, _, err = cli(capsys, "compare", spec, "--backends", "lightning,keras-jax")
    line = one_error_line(err)
    assert code == 2 and "'keras' is not installed" in line and 'pip install "unified-trainer[keras]"' in line


def test_no_backend_installed(capsys, spec, registered):
    registered(ignite=FAKE_MISSING, lightning=FAKE_MISSING)
    code, _, err = cli(capsys, "compare", spec)
    line = one_error_line(err)
    assert code == 2 and "no training backend is installed" in line


@pytest.mark.parametrize("value, expected", [
    ("", "expected a comma-separated list of backends"),
    ("lightning,,ignite", "empty backend name"),
    ("lightning,lightning", "backend 'lightning' given twice"),
])
def test_malformed_backend_list(capsys, spec, registered, value, expected):
    registered(ignite=FAKE_INSTALLED, lightning=FAKE_INSTALLED)
    code, _, err = cli(capsys, "compare", spec, "--backends", value)
    line = one_error_line(err)
    assert code == 2 and line.startswith("unified: error: --backends: ") and expected in line


def test_bad_spec_exits_2_before_any_run(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("max_epochs", "max_epoch"), encoding="utf-8")
    code, out, err = cli(capsys, "compare", str(path), "--out", str(tmp_path / "o"))
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert line.startswith(f"unified: error: {path}: trainer: unknown key 'max_epoch'; did you mean 'max_epochs'?")
    assert not (tmp_path / "o").exists()


def test_bad_override_exits_2(capsys, spec):
    code, _, err = cli(capsys, "compare", spec, "--set", "optimizer.lr=-1")
    line = one_error_line(err)
    assert code == 2 and f"{spec}: optimizer.lr: " in line
    assert not Path("runs").exists()  # the default output directory was never created


def test_missing_spec_file(capsys, tmp_path):
    code, _, err = cli(capsys, "compare", str(tmp_path / "nope.yaml"))
    assert code == 2 and "spec file not found" in one_error_line(err)


def test_out_dir_holding_a_comparison(capsys, spec, tmp_path, registered):
    registered(ignite=FAKE_INSTALLED)
    out = tmp_path / "o"
    out.mkdir()
    (out / "compare.json").write_text("{}")
    code, _, err = cli(capsys, "compare", spec, "--out", str(out))
    assert code == 2 and "already holds a comparison" in one_error_line(err)


def test_unknown_option_is_one_line(capsys, spec):
    code, _, err = cli(capsys, "compare", spec, "--epochs", "3")
    assert code == 2 and "unrecognized arguments" in one_error_line(err)


# -- backend names ---------------------------------------------------------------------------------------------
def test_parse_targets(registered):
    registered(ignite=FAKE_INSTALLED, lightning=FAKE_INSTALLED, keras=FAKE_INSTALLED)
    targets = parse_targets(" lightning , keras-torch,keras-tensorflow,keras")
    assert targets == [Target("lightning", "lightning"), Target("keras-torch", "keras", "torch"),
                       Target("keras-tensorflow", "keras", "tensorflow"), Target("keras", "keras")]
    assert targets[1].run_args() == ["--backend", "keras", "--keras-backend", "torch"]
    assert targets[0].run_args() == ["--backend", "lightning"]
    # default: every installed one, in registry order; keras once per installed tensor backend, never bare
    registered(ignite=FAKE_INSTALLED, lightning=FAKE_MISSING, keras=FAKE_INSTALLED)
    assert [t.name for t in parse_targets(None)] == ["ignite", "keras-tensorflow", "keras-torch", "keras-jax"]
    with pytest.raises(SpecError):
        parse_targets("keras-")
    registered(lightning=FAKE_MISSING)
    with pytest.raises(BackendUnavailableError):
        parse_targets("lightning")


def test_default_targets_are_the_installed_variants(registered):
    registered(("torch",), ignite=FAKE_INSTALLED, keras=FAKE_INSTALLED)
    targets = parse_targets(None)
    assert targets == installed_targets()
    assert [(t.name, t.backend, t.variant) for t in targets] == [
        ("ignite", "ignite", None), ("keras-tensorflow", "keras", "tensorflow"), ("keras-jax", "keras", "jax")]
    assert targets[2].run_args() == ["--backend", "keras", "--keras-backend", "jax"]
    # keras installed but none of its tensor backends: no keras column at all
    registered(("tensorflow", "torch", "jax"), ignite=FAKE_INSTALLED, keras=FAKE_INSTALLED)
    assert [t.name for t in parse_targets(None)] == ["ignite"]
    # the variant names come from the registry's Variant, not from a list in compare
    from unified.registry import BUILTIN_BACKENDS

    choices = BUILTIN_BACKENDS["keras"].variant.choices
    registered(keras=FAKE_INSTALLED)
    assert [t.variant for t in parse_targets(None)] == list(choices)


def test_named_variant_not_installed_is_one_line(capsys, spec, registered):
    registered(("jax",), ignite=FAKE_INSTALLED, keras=FAKE_INSTALLED)
    code, _, err = cli(capsys, "compare", spec, "--backends", "ignite,keras-jax")
    line = one_error_line(err)
    assert code == 2 and "--backends: 'keras-jax' needs no_such_framework_xyz, which is not installed" in line
    assert "installed: ignite, keras-tensorflow, keras-torch" in line


# -- the report's pure parts -----------------------------------------------------------------------------------
def test_loss_gap_aligns_on_step():
    a = {1: 1.0, 2: 0.5, 3: 0.25}
    b = {2: 0.5000001, 3: 0.26, 4: 9.0}
    gap, n = loss_gap(a, b)
    assert n == 2 and gap == pytest.approx(0.01)
    assert loss_gap(a, {7: 1.0}) == (None, 0)


def _row(status="completed", code=0, error=None, **metrics):
    return {"backend": "x", "keras_backend": None, "status": status, "exit_code": code, "epochs": 2,
            "global_step": 8, "metrics": {"train/loss": 0.5, **metrics}, "best": None, "train_time_s": 0.4,
            "ms_per_step": 50.0, "train_loss_gap": {"reference": "ignite", "max_abs": 0.0, "steps": 8},
            "run_dir": "r", "log": "l", "error": error}


def test_markdown_table():
    report = {"name": "t", "spec": "s.yaml", "overrides": ["trainer.max_epochs=2"], "reference": "ignite",
              "monitor": {"key": "val/loss", "mode": "min"}, "log_every_n_steps": 1,
              "backends": {"ignite": _row(**{"val/loss": 0.123456, "val/accuracy": 0.9}),
                           "lightning": _row(**{"val/loss": 0.123456, "val/accuracy": 0.9}),
                           "keras-torch": {**_row("failed", 1, "boom | bang", **{"val/loss": None}),
                                           "epochs": 0, "global_step": 0, "ms_per_step": None,
                                           "train_loss_gap": {"reference": "ignite", "max_abs": None, "steps": 0}}}}
    text = markdown(report)
    rows = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert rows[0] == ("| backend | status | epochs | steps | val/loss | val/accuracy | train time s | ms/step "
                       "| max \\|Δ train/loss\\| vs ignite | error |")
    assert rows[1] == "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    assert rows[2] == "| ignite | completed | 2 | 8 | 0.1235 | 0.9000 | 0.40 | 50.00 | (reference) |  |"
    assert rows[3] == "| lightning | completed | 2 | 8 | 0.1235 | 0.9000 | 0.40 | 50.00 | 0.00e+00 (8 steps) |  |"
    assert rows[4] == "| keras-torch | failed (exit 1) | 0 | 0 | — | — | 0.40 | — | — | boom \\| bang |"
    assert "--set trainer.max_epochs=2" in text
    # no failure: no error column
    del report["backends"]["keras-torch"]
    assert "error" not in markdown(report).splitlines()[2]


def test_compare_is_registered_in_the_cli(capsys):
    code, out, _ = cli(capsys, "compare", "--help")
    assert code == 0 and "--backends" in out and "--out" in out and "--set" in out
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "compare" in out
