"""`import unified` imports no framework and is fast."""

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
        "unified.callbacks, unified.registry, unified.adapters.base;"
        f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))"
    )
    assert _probe(code) == []


def test_import_unified_is_fast():
    code = (
        "import time, json; t = time.perf_counter(); import unified; "
        "print(json.dumps(time.perf_counter() - t))"
    )
    times = sorted(_probe(code) for _ in range(5))
    assert times[2] < 0.3, f"median import time {times[2]:.3f}s"


def test_public_api():
    import unified

    for name in ("UnifiedTrainer", "load_spec", "Spec", "Callback", "Metric", "SpecError",
                 "BackendUnavailableError", "NotSupportedError"):
        assert getattr(unified, name) is not None
    assert issubclass(unified.SpecError, ValueError)
    assert issubclass(unified.BackendUnavailableError, ImportError)
