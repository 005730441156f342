"""Shared fixtures. The conformance suite runs every test once per installed backend."""

from __future__ import annotations

import copy
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from unified.registry import installed_backends

BACKENDS = installed_backends()

BASE_SPEC: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": 32},
    "model": {"arch": "mlp", "hidden": [32]},
    "optimizer": {"name": "adam", "lr": 0.003},
    "trainer": {"max_epochs": 2, "log_every_n_steps": 5, "progress_bar": False},
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, ids=BACKENDS)


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
