"""Models across trainers (Keras on its torch backend): a torch module on keras, a Keras model on the torch trainers.

Keras fixes its tensor backend per process, so each case runs in a subprocess with KERAS_BACKEND=torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from unified.registry import installed_backends

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None,
    reason="needs keras and torch",
)

MODELS = '''
def torch_net(in_features, num_classes, width=32):
    import torch
    return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes))


def keras_net(in_features, num_classes, width=32):
    import keras
    return keras.Sequential([keras.Input((in_features,)), keras.layers.Dense(width, activation="relu"),
                             keras.layers.Dense(num_classes)])
'''


def _run_all(tmp_path, factory: str, backends: list[str]) -> dict:
    (tmp_path / "xmodels.py").write_text(MODELS)
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from unified import UnifiedTrainer
        spec = {{"data": {{"source": "sklearn:digits", "standardize": True}},
                "model": {{"factory": "xmodels:{factory}"}}, "optimizer": {{"name": "sgd", "lr": 0.05}},
                "trainer": {{"max_epochs": 3, "progress_bar": False, "log_every_n_steps": 1}},
                "logging": {{"dir": {str(tmp_path / "runs")!r}}}}}
        out = {{}}
        for b in {backends!r}:
            r = UnifiedTrainer(spec, backend=b).fit()
            out[b] = {{"acc": r.metrics["val/accuracy"], "loss": r.metrics["val/loss"], "steps": r.global_step}}
        print(json.dumps(out))
    """)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("factory", ["torch_net", "keras_net"])
def test_one_model_trains_on_every_trainer(tmp_path, factory):
    backends = [b for b in ("lightning", "ignite", "keras") if b in installed_backends()]
    if len(backends) < 2:
        pytest.skip("needs keras and a torch trainer")
    results = _run_all(tmp_path, factory, backends)
    for b, r in results.items():
        assert r["steps"] == 135 and r["acc"] > 0.85, (b, r)
    # same initial weights (seeded), same batches, same SGD: the same result everywhere
    losses = [r["loss"] for r in results.values()]
    assert max(losses) - min(losses) <= 1e-5, results
