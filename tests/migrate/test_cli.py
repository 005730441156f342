"""``unified migrate``: dry run, --write, exit codes, reports, broken files, --spec-out, lazy imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("libcst")

from unified.cli import main  # noqa: E402

GOLDEN = Path(__file__).with_name("golden")


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    shutil.copy(GOLDEN / "lightning_trainer_args.before.py", root / "train_lit.py")
    shutil.copy(GOLDEN / "keras_compile_fit.before.py", root / "pkg" / "train_keras.py")
    shutil.copy(GOLDEN / "not_a_framework.before.py", root / "pkg" / "plain.py")
    (root / "broken.py").write_text("import pytorch_lightning as pl\ntrainer = pl.Trainer(max_epochs=\n")
    (root / "latin1.py").write_bytes("# caf\xe9\nimport keras\n".encode("latin-1"))
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dry_run_changes_nothing_and_prints_a_diff(tmp_path, capsys):
    root = tree(tmp_path)
    before = snapshot(root)
    code = main(["migrate", str(root)])
    out, err = capsys.readouterr()
    assert snapshot(root) == before
    assert code == 2  # manual items remain (the broken and latin-1 files, history['accuracy'])
    assert out.startswith("--- a/") and "+from unified import UnifiedTrainer" in out
    assert "train_lit.py" in out and "train_keras.py" in out and "plain.py" not in out
    assert "broken.py:2:1" in err and "file.syntax-error" in err
    assert "latin1.py:1:1" in err and "file.not-utf8" in err
    assert "5 file(s) scanned, 2 would change" in err


def test_write_rewrites_in_place_and_a_second_run_changes_nothing(tmp_path, capsys):
    root = tree(tmp_path)
    assert main(["migrate", str(root / "train_lit.py"), "--write"]) == 1
    capsys.readouterr()
    text = (root / "train_lit.py").read_text()
    golden = (GOLDEN / "lightning_trainer_args.after.py").read_text()
    assert text == golden.replace('"name": "lightning_trainer_args"', '"name": "train_lit"')  # named after the file
    assert not list(root.glob("*.tmp*"))
    assert main(["migrate", str(root / "train_lit.py")]) == 0  # nothing left to change, nothing manual
    out, _ = capsys.readouterr()
    assert out == ""
    # the broken file does not stop the rest of the tree
    code = main(["migrate", str(root), "--write"])
    capsys.readouterr()
    assert code == 2
    assert "UnifiedTrainer" in (root / "pkg" / "train_keras.py").read_text()
    assert (root / "broken.py").read_text().endswith("max_epochs=\n")
    after = snapshot(root)
    main(["migrate", str(root), "--write"])
    assert snapshot(root) == after


def test_json_report(tmp_path, capsys):
    root = tree(tmp_path)
    code = main(["migrate", str(root), "--report", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == doc["exit_code"] == 2
    assert doc["written"] is False and doc["diff"].startswith("--- a/")
    assert set(doc["counts"]) == {"converted", "manual", "unsupported"}
    keys = {"file", "line", "col", "construct", "action", "rule", "hint"}
    assert all(set(f) == keys for f in doc["findings"])
    gpus = [f for f in doc["findings"] if f["rule"] == "lightning.trainer.gpus"]
    assert len(gpus) == 1 and gpus[0]["line"] == 26 and gpus[0]["action"] == "converted"
    limit = [f for f in doc["findings"] if f["rule"] == "lightning.trainer.limit_train_batches"]
    assert limit and limit[0]["action"] == "unsupported"


def test_spec_out_writes_the_extracted_settings(tmp_path, capsys):
    src = tmp_path / "train.py"
    shutil.copy(GOLDEN / "keras_callbacks.before.py", src)
    out = tmp_path / "spec.yaml"
    assert main(["migrate", str(src), "--spec-out", str(out)]) == 2  # Printer() is manual
    capsys.readouterr()
    spec = yaml.safe_load(out.read_text())
    assert spec["backend"] == "keras" and spec["task"] == "regression"
    assert spec["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    assert spec["callbacks"][0]["early_stopping"]["restore_best_weights"] is True
    from unified.spec import load_spec

    load_spec({k: v for k, v in spec.items() if k != "backend"})  # a valid spec


def test_spec_out_leaves_out_script_expressions(tmp_path, capsys):
    src = tmp_path / "train.py"
    shutil.copy(GOLDEN / "lightning_trainer_args.before.py", src)
    out = tmp_path / "spec.yaml"
    main(["migrate", str(src), "--spec-out", str(out)])
    capsys.readouterr()
    text = out.read_text()
    assert "# left out (an expression of the script):" in text and "trainer.max_epochs" in text
    assert "max_epochs" not in yaml.safe_load(text)["trainer"]


@pytest.mark.parametrize("argv, message", [
    (["migrate"], "required: PATH"),
    (["migrate", "nope/missing.py"], "no such file or directory"),
    (["migrate", ".", "--report", "xml"], "invalid choice"),
    (["migrate", ".", "--frobnicate"], "unrecognized arguments"),
])
def test_usage_errors_exit_3(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 3
    assert message in capsys.readouterr().err


def test_spec_out_directory_is_a_usage_error(tmp_path, capsys):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    assert main(["migrate", str(src), "--spec-out", str(tmp_path)]) == 3
    assert "is a directory" in capsys.readouterr().err


def test_import_unified_and_migrate_load_no_libcst_or_framework():
    code = ("import sys, unified, unified.migrate, unified.migrate.report, unified.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('libcst', 'torch', 'keras', 'tensorflow', 'pytorch_lightning', 'ignite')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
