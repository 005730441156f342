"""Models across trainers: a torch module on every trainer that takes one (Keras only on its torch backend),
a Keras model on every Keras target and on the torch trainers in a process whose Keras runs on torch.

The same factory, seed, batches and SGD give the same result on every target that trains it with the same
initial weights (drawn by the same library); a target that cannot train that kind of model refuses it
before training (exit 2, one line).
"""

from __future__ import annotations

import importlib.util

import pytest

MODELS = '''
def torch_net(in_features, num_classes, width=32):
    import torch
    return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes))


def keras_net(in_features, num_classes, width=32):
    import keras
    return keras.Sequential([keras.Input((in_features,)), keras.layers.Dense(width, activation="relu"),
                             keras.layers.Dense(num_classes)])
'''
FACTORIES = ["torch_net", "keras_net"]
SPEC = {"name": "x", "seed": 0, "data": {"source": "sklearn:digits", "standardize": True},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "trainer": {"max_epochs": 3, "progress_bar": False, "log_every_n_steps": 1}}


def _plan(target, factory: str) -> tuple[dict, str | None]:
    """(the job's env, the line of a refusal or None) for ``factory`` on ``target``."""
    if target.backend == "keras":  # Keras trains Keras models, and torch modules on its torch backend
        refused = factory == "torch_net" and target.variant != "torch"
        return {}, "keras_backend 'torch'" if refused else None
    # a torch trainer trains torch modules, and Keras models when this process's Keras runs on torch
    return ({"KERAS_BACKEND": "torch"} if factory == "keras_net" else {}), None


def _initializer(target, factory: str) -> str:
    """The library whose seeded RNG draws the factory's initial weights on ``target``."""
    return "torch" if factory == "torch_net" or target.backend != "keras" else target.variant


@pytest.fixture
def cross_runs(run_target_shared):
    """``"<target>/<factory>" -> RunResult`` for every target and factory: as few processes as the Keras
    backends need (one for everything on KERAS_BACKEND=torch)."""
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("needs keras and torch")
    Job = run_target_shared.Job
    jobs = []
    for target in run_target_shared.targets:
        for factory in FACTORIES:
            env, refused = _plan(target, factory)
            jobs.append(Job(target, {**SPEC, "model": {"factory": f"xmodels:{factory}"}}, name=factory, env=env,
                            expect=2 if refused else 0, files={"xmodels.py": MODELS}))
    return run_target_shared.many(jobs)


@pytest.mark.parametrize("factory", FACTORIES)
def test_one_model_trains_on_every_trainer(target, factory, cross_runs, run_target):
    result = cross_runs[f"{target.name}/{factory}"].ok()
    _, refused = _plan(target, factory)
    if refused:
        err = [ln for ln in result.stderr.splitlines() if ln.startswith("unified: error:")]
        assert len(err) == 1 and refused in err[0], result.stderr[-2000:]
        assert not result.step_rows()  # refused before training (the run directory is left behind: see
        # LEFT_BEHIND in test_schedules.py)
        return
    assert result.summary["global_step"] == 135 and result.metrics["val/accuracy"] > 0.85, result.metrics
    # same initial weights (the factory under the seed, drawn by the same library), same batches, same SGD:
    # the reference's result
    ref = run_target.reference_for(target)
    if ref is None or _initializer(ref, factory) != _initializer(target, factory):
        return  # nothing draws the same initial weights to compare with (Keras on tensorflow / jax)
    want = cross_runs[f"{ref.name}/{factory}"].ok()
    assert abs(result.metrics["val/loss"] - want.metrics["val/loss"]) <= 1e-5, (result.metrics, want.metrics)
