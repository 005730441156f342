"""A backend run imports its own framework and no other (the tox backend envs rely on this)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

OTHERS = {
    "torch": ("pytorch_lightning", "lightning", "ignite", "tensorflow", "keras", "jax"),
    "lightning": ("ignite", "tensorflow", "keras", "jax"),
    "ignite": ("pytorch_lightning", "lightning", "tensorflow", "keras", "jax"),
    # not jax: `import keras` imports jax itself when it is installed, whatever the tensor backend
    "keras": ("pytorch_lightning", "lightning", "ignite"),
}


def test_run_imports_no_other_framework(backend, tmp_path):
    others = OTHERS.get(backend)
    if others is None:
        pytest.skip(f"no isolation table for {backend}")
    code = textwrap.dedent(f"""
        import json, sys
        from unified import UnifiedTrainer
        spec = {{"data": {{"source": "sklearn:iris"}}, "model": {{"hidden": [8]}},
                "trainer": {{"max_epochs": 1, "progress_bar": False}}, "logging": {{"dir": {str(tmp_path)!r}}}}}
        UnifiedTrainer(spec, backend={backend!r}).fit()
        print(json.dumps(sorted(m for m in {others!r} if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
