"""The corpus (tests/migrate/corpus): 22 realistic Lightning / Ignite / Keras scripts on scikit-learn data.

Every script is migrated here (valid Python, idempotent, the expected manual items). A representative
subset, one per framework, is also run before and after migration and must reach a comparable final
metric; ``UNIFIED_MIGRATE_CORPUS=all pytest tests/migrate/test_corpus.py`` runs every script
(``python benchmarks/migrate_rate.py --run`` prints the same comparison as a table).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("libcst")

from unified.migrate import migrate_text  # noqa: E402
from unified.registry import installed_backends  # noqa: E402

CORPUS = Path(__file__).with_name("corpus")
SCRIPTS = sorted(p.name for p in CORPUS.glob("*.py"))
FINAL = re.compile(r"^final (\w+): \[?(-?[0-9.]+(?:e-?\d+)?)", re.M)
DEFAULT_RUN = {"lightning_iris_basic.py", "ignite_wine_basic.py", "keras_digits_basic.py"}
ORIGINAL_CANNOT_RUN = {"lightning_legacy_gpus.py"}  # Lightning 1.x arguments: only the migrated script runs
# script -> manual items expected (0 = fully converted); unchanged files are the custom-loop ones
MANUAL = {
    "ignite_digits_custom_engine.py": 1,
    "keras_categorical_onehot.py": 2, "keras_custom_train_step.py": 2, "keras_gradient_tape.py": 1,
    "lightning_manual_optimization.py": 2, "lightning_scheduler.py": 2,
}
UNCHANGED = {"ignite_digits_custom_engine.py", "keras_categorical_onehot.py", "keras_custom_train_step.py",
             "keras_gradient_tape.py", "lightning_manual_optimization.py", "lightning_scheduler.py"}


def test_corpus_size_and_frameworks():
    assert len(SCRIPTS) >= 20
    for fw in ("lightning_", "ignite_", "keras_"):
        assert sum(s.startswith(fw) for s in SCRIPTS) >= 6


@pytest.mark.parametrize("name", SCRIPTS)
def test_corpus_script_converts(name):
    src = (CORPUS / name).read_text()
    result = migrate_text(src, name)
    manual = [f for f in result.findings if f.action == "manual"]
    assert len(manual) == MANUAL.get(name, 0), manual
    assert (result.new_text is None) == (name in UNCHANGED)
    if result.new_text is not None:
        compile(result.new_text, name, "exec")
        assert "UnifiedTrainer(" in result.new_text
        again = migrate_text(result.new_text, name)
        assert again.new_text is None
    for f in manual:  # every manual item names its line
        assert f.line >= 1 and f.hint


def _run(path: Path) -> tuple[int, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, path.name], cwd=path.parent, capture_output=True, text=True, env=env,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _final(output: str) -> tuple[str, float]:
    found = FINAL.findall(output)
    assert found, output[-2000:]
    return found[-1][0], float(found[-1][1])


RUN = [s for s in SCRIPTS if os.environ.get("UNIFIED_MIGRATE_CORPUS") == "all" or s in DEFAULT_RUN]


@pytest.mark.parametrize("name", RUN)
def test_original_and_migrated_reach_comparable_metrics(name, tmp_path):
    needs = {"lightning": "lightning", "ignite": "ignite", "keras": "keras"}[name.split("_")[0]]
    if needs not in installed_backends():
        pytest.skip(f"{needs} is not installed")
    result = migrate_text((CORPUS / name).read_text(), name)
    orig, new = tmp_path / "orig", tmp_path / "new"
    orig.mkdir()
    new.mkdir()
    shutil.copy(CORPUS / name, orig / name)
    (new / name).write_text(result.new_text or (CORPUS / name).read_text())
    jobs = [new / name] + ([] if name in ORIGINAL_CANNOT_RUN else [orig / name])
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(_run, jobs))
    rc, out = outcomes[0]
    assert rc == 0, out[-3000:]
    metric, value = _final(out)
    if result.new_text is not None:
        summaries = list(new.glob("**/summary.json"))
        assert summaries, "the migrated script leaves a run directory"
    if name in ORIGINAL_CANNOT_RUN:
        assert 0.0 < value < 1.0 if metric == "accuracy" else value > 0
        return
    orc, oout = outcomes[1]
    assert orc == 0, oout[-3000:]
    ometric, ovalue = _final(oout)
    assert metric == ometric
    if metric == "accuracy":
        assert value >= ovalue - 0.1, (value, ovalue)
    else:  # losses and errors: not much worse
        assert value <= ovalue * 1.5 + 0.05, (value, ovalue)
