"""Every name list has one home; the spec, the implementations and the docs derive from it."""

from __future__ import annotations

import re
from pathlib import Path

from unified.callbacks import BUILTIN_CALLBACKS
from unified.losses import DEFAULT_LOSS, LOSSES
from unified.metrics import BUILTIN_METRICS
from unified.registry import KERAS_TENSOR_BACKENDS, available_backends
from unified.spec import CALLBACK_KINDS, METRICS_FOR_TASK, Spec, best_monitor

DOCS = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def test_callback_kinds_are_built_from_one_list():
    assert set(BUILTIN_CALLBACKS) | {"python"} == set(CALLBACK_KINDS)
    fields = set(Spec.model_fields["callbacks"].annotation.__args__[0].model_fields)
    assert fields == set(CALLBACK_KINDS)


def test_metric_and_loss_lists_derive_from_their_home():
    assert set().union(*METRICS_FOR_TASK.values()) == set(BUILTIN_METRICS)
    assert all(DEFAULT_LOSS[task] in {n for n, t in LOSSES.items() if task in t} for task in DEFAULT_LOSS)
    literal = Spec.model_fields["loss"].annotation.__args__[0].__args__
    assert set(literal) == set(LOSSES)
    keras = Spec.model_fields["keras_backend"].annotation.__args__[0].__args__
    assert tuple(keras) == KERAS_TENSOR_BACKENDS


def test_docs_name_every_builtin():
    text = DOCS.read_text(encoding="utf-8")
    for name in [*BUILTIN_METRICS, *LOSSES, *CALLBACK_KINDS, *KERAS_TENSOR_BACKENDS, *available_backends()]:
        assert re.search(rf"`{name}`", text), f"docs/spec.md does not name `{name}`"


def test_best_follows_checkpoint_then_early_stopping():
    es = {"early_stopping": {"monitor": "val/accuracy", "mode": "max"}}
    ck = {"model_checkpoint": {"monitor": "val/f1_macro", "mode": "max"}}
    assert best_monitor(Spec(callbacks=[es, ck])) == ("val/f1_macro", "max")
    assert best_monitor(Spec(callbacks=[es])) == ("val/accuracy", "max")
    assert best_monitor(Spec()) == ("val/loss", "min")
