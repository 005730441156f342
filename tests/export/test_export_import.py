"""The export and serve modules import no framework or runtime until an artifact is made or loaded."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "keras", "jax", "onnx", "onnxruntime", "onnxscript", "tf2onnx", "fastapi",
         "uvicorn", "starlette")


def test_export_and_serve_modules_import_nothing_heavy():
    code = ("import sys, json, unified.export, unified.export.runtimes, unified.serve, unified.trainer, unified.cli;"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
