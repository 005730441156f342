"""`import unified` imports no framework, and nothing third-party at all (what makes it fast)."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "pytorch_lightning", "lightning", "ignite")


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_unified_imports_no_framework():
    code = (
        "import sys, json, unified, unified.spec, unified.cli, unified.trainer, unified.data, unified.metrics, "
        "unified.callbacks, unified.registry, unified.adapters.base, unified.tune;"
        f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
    )
    assert _probe(code) == []


def test_import_unified_loads_only_the_standard_library():
    """What keeps ``import unified`` fast: its public names load lazily, so the import itself pulls in no
    third-party module (no numpy, pydantic, yaml). How long it takes is measured by
    ``benchmarks/import_time.py``, not asserted here."""
    code = (
        "import sys, json; before = set(sys.modules); import unified; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(json.dumps(sorted(m for m in new if m not in sys.stdlib_module_names and m != 'unified' "
        "and not m.startswith('_'))))"
    )
    assert _probe(code) == []


def test_lazy_public_names_load_on_first_use():
    code = (
        "import sys, json, unified; before = 'pydantic' in sys.modules; unified.Spec; "
        "print(json.dumps([before, 'pydantic' in sys.modules]))"
    )
    assert _probe(code) == [False, True]


def test_import_tune_and_data_sources_load_no_optuna_or_numpy():
    """``unified.tune`` imports Optuna only when a search runs; the data-source registry needs no numpy."""
    code = (
        "import sys, json, unified.data.sources; no_numpy = 'numpy' not in sys.modules; import unified.tune; "
        "print(json.dumps([no_numpy, sorted(m for m in ('optuna', 'sqlalchemy', 'matplotlib') if m in sys.modules)]))"
    )
    assert _probe(code) == [True, []]


def test_public_api():
    import unified

    for name in ("UnifiedTrainer", "load_spec", "Spec", "Callback", "Metric", "SpecError",
                 "BackendUnavailableError", "NotSupportedError"):
        assert getattr(unified, name) is not None
    assert issubclass(unified.SpecError, ValueError)
    assert issubclass(unified.BackendUnavailableError, ImportError)
