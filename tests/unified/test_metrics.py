"""unified.metrics: built-ins equal scikit-learn on streamed uneven batches; user metrics; EvalAccumulator."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from unified.errors import SpecError
from unified.metrics import BUILTIN_METRICS, EvalAccumulator, Metric, build_metrics
from unified.spec import Spec

SIZES = [1, 7, 0, 33, 2, 50, 19, 88]  # uneven batches, including an empty one


def stream(metric: Metric, outputs: np.ndarray, targets: np.ndarray) -> float:
    metric.reset()
    start = 0
    for size in SIZES:
        metric.update(outputs[start:start + size], targets[start:start + size])
        start += size
    assert start == len(targets)
    value = metric.compute()
    assert type(value) is float
    return value


N = sum(SIZES)


def make_spec(task: str = "classification", metrics=None) -> Spec:
    data = {"task": task, "data": {"source": "sklearn:iris"}}
    if metrics is not None:
        data["metrics"] = metrics
    return Spec.from_dict(data)


def test_registry_keys():
    assert set(BUILTIN_METRICS) == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "auroc",
                                    "mse", "mae", "r2"}
    assert all(issubclass(c, Metric) for c in BUILTIN_METRICS.values())
    assert BUILTIN_METRICS["mse"].higher_is_better is False and BUILTIN_METRICS["r2"].higher_is_better is True


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 6
    logits = rng.normal(size=(N, c)).astype(np.float32)
    targets = rng.integers(0, c - 1, size=N)  # class 5 never a target; class may never be predicted
    logits[:, 3] -= 10.0  # class 3 (almost) never predicted
    pred = logits.argmax(1)
    expected = {
        "accuracy": skm.accuracy_score(targets, pred),
        "f1_macro": skm.f1_score(targets, pred, average="macro", zero_division=0),
        "precision_macro": skm.precision_score(targets, pred, average="macro", zero_division=0),
        "recall_macro": skm.recall_score(targets, pred, average="macro", zero_division=0),
    }
    for name, want in expected.items():
        for num_classes in (c, None, 8):  # known, unknown (grows), larger than needed
            got = stream(BUILTIN_METRICS[name](task="classification", num_classes=num_classes), logits, targets)
            assert got == pytest.approx(want, abs=1e-12), (name, num_classes)


def test_binary_matches_sklearn():
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 2, size=N).astype(np.float32)
    logits = (rng.normal(size=N) + targets).astype(np.float32)
    logits[:40] = np.round(logits[:40])  # ties
    pred = (logits > 0).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(targets, pred),
        "f1_macro": skm.f1_score(targets, pred, average="macro", zero_division=0),
        "precision_macro": skm.precision_score(targets, pred, average="macro", zero_division=0),
        "recall_macro": skm.recall_score(targets, pred, average="macro", zero_division=0),
        "auroc": skm.roc_auc_score(targets, logits),
    }
    for name, want in expected.items():
        m = BUILTIN_METRICS[name](task="binary", num_classes=2)
        assert stream(m, logits, targets) == pytest.approx(want, abs=1e-12), name
        assert stream(m, logits[:, None], targets[:, None]) == pytest.approx(want, abs=1e-12), name


def test_auroc_single_class_is_nan_and_task_checked():
    m = BUILTIN_METRICS["auroc"](task="binary", num_classes=2)
    m.update(np.array([0.1, 0.2]), np.array([1.0, 1.0]))
    assert math.isnan(m.compute())
    with pytest.raises(SpecError):
        BUILTIN_METRICS["auroc"](task="classification", num_classes=3)


@pytest.mark.parametrize("k", [None, 3])
def test_regression_matches_sklearn(k):
    rng = np.random.default_rng(7)
    shape = (N,) if k is None else (N, k)
    targets = (rng.normal(size=shape) * 3 + 100).astype(np.float32)  # large offset: tests r2 stability
    preds = (targets + rng.normal(size=shape)).astype(np.float32)
    t64, p64 = targets.astype(np.float64), preds.astype(np.float64)
    expected = {
        "mse": skm.mean_squared_error(t64, p64),
        "mae": skm.mean_absolute_error(t64, p64),
        "r2": skm.r2_score(t64, p64),
    }
    for name, want in expected.items():
        got = stream(BUILTIN_METRICS[name](task="regression", num_classes=None), preds, targets)
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12), name


def test_regression_output_column_vs_flat_targets_and_constant_target():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = BUILTIN_METRICS["mse"](task="regression")
    m.update(np.array([[1.0], [2.0], [3.0], [5.0]]), y)
    assert m.compute() == 0.25
    r2 = BUILTIN_METRICS["r2"](task="regression")
    r2.update(np.ones(3), np.ones(3))
    assert r2.compute() == skm.r2_score(np.ones(3), np.ones(3)) == 1.0
    r2.reset()
    r2.update(np.zeros(3), np.ones(3))
    assert r2.compute() == skm.r2_score(np.ones(3), np.zeros(3)) == 0.0


def test_compute_without_updates_is_nan():
    for name, cls in BUILTIN_METRICS.items():
        task = "binary" if name == "auroc" else ("regression" if name in ("mse", "mae", "r2") else "classification")
        assert math.isnan(cls(task=task, num_classes=3 if task == "classification" else None).compute()), name


def test_build_metrics_defaults_and_names():
    ms = build_metrics(make_spec(), 3)
    assert [m.name for m in ms] == ["accuracy", "f1_macro"]
    ms = build_metrics(make_spec("binary"), 2)
    assert [m.name for m in ms] == ["accuracy", "f1_macro", "auroc"]
    ms = build_metrics(make_spec("regression", ["r2", "mae"]), None)
    assert [m.name for m in ms] == ["r2", "mae"]


USER_METRICS = '''
import numpy as np
from unified.metrics import Metric

class MeanOutput(Metric):
    """Mean of the first output column, scaled."""
    name = "mean_out"
    higher_is_better = False

    def __init__(self, scale=1.0, task="classification", num_classes=None):
        self.scale = scale
        self.seen_task = task
        self.seen_classes = num_classes
        super().__init__(task=task, num_classes=num_classes)

    def reset(self):
        self.total, self.n = 0.0, 0

    def update(self, outputs, targets):
        self.total += float(np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)[:, 0].sum())
        self.n += len(outputs)

    def compute(self):
        return self.total / self.n * self.scale if self.n else float("nan")

class Unnamed(Metric):
    def reset(self):
        self.n = 0
    def update(self, outputs, targets):
        self.n += len(targets)
    def compute(self):
        return float(self.n)

class DuckCount:
    def __init__(self):
        self.n = 0
    def reset(self):
        self.n = 0
    def update(self, outputs, targets):
        self.n += len(targets)
    def compute(self):
        return float(self.n)

class NotAMetric:
    def reset(self):
        pass

def not_a_class():
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_metrics_mod.py").write_text(USER_METRICS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_metrics_mod"
    sys.modules.pop("my_metrics_mod", None)


def py(target: str, **kwargs) -> dict:
    return {"python": {"target": target, "kwargs": kwargs}}


def test_user_metrics(user_module):
    spec = make_spec(metrics=["accuracy", py(f"{user_module}:MeanOutput", scale=2.0), py(f"{user_module}:Unnamed"),
                              py(f"{user_module}:DuckCount")])
    ms = build_metrics(spec, 3)
    assert [m.name for m in ms] == ["accuracy", "mean_out", "unnamed", "duckcount"]
    assert ms[1].scale == 2.0 and ms[1].seen_task == "classification" and ms[1].seen_classes == 3
    acc = EvalAccumulator(ms, "val")
    acc.reset()
    acc.update(np.array([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]]), np.array([0, 1]), loss_sum=3.0, count=2)
    acc.update(np.array([[5.0, 9.0, 0.0]]), np.array([1]), loss_sum=1.5, count=1)
    out = acc.compute()
    assert out == {"val/loss": 1.5, "val/accuracy": pytest.approx(2 / 3), "val/mean_out": 6.0,
                   "val/unnamed": 3.0, "val/duckcount": 3.0}
    assert acc.keys == list(out)


@pytest.mark.parametrize("metric_target, parts", [
    ("no_such_metrics_mod:X", ["metrics[1]", "cannot import 'no_such_metrics_mod'", "No module named"]),
    ("my_metrics_mod:Missing", ["metrics[1]", "has no attribute 'Missing'"]),
    ("my_metrics_mod:NotAMetric", ["metrics[1]", "not a Metric", "update, compute"]),
    ("my_metrics_mod:not_a_class", ["metrics[1]", "not a class"]),
])
def test_user_metric_errors(user_module, metric_target, parts):
    with pytest.raises(SpecError) as e:
        build_metrics(make_spec(metrics=["accuracy", py(metric_target)]), 3)
    msg = str(e.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


def test_user_metric_bad_kwargs_and_duplicate_name(user_module):
    with pytest.raises(SpecError) as e:
        build_metrics(make_spec(metrics=[py(f"{user_module}:MeanOutput", nope=1)]), 3)
    assert "metrics[0]" in str(e.value) and "nope" in str(e.value)
    with pytest.raises(SpecError) as e:
        build_metrics(make_spec(metrics=[py(f"{user_module}:Unnamed"), py(f"{user_module}:Unnamed")]), 3)
    assert "used twice" in str(e.value) and "metrics[1]" in str(e.value)


def test_eval_accumulator_matches_sklearn_and_resets():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(N, 4))
    targets = rng.integers(0, 4, size=N)
    losses = rng.random(N)
    acc = EvalAccumulator(build_metrics(make_spec(metrics=["accuracy", "f1_macro"]), 4), "test")
    for _ in range(2):  # a second pass after reset gives the same numbers
        acc.reset()
        start = 0
        for size in SIZES:
            sl = slice(start, start + size)
            acc.update(logits[sl], targets[sl], float(losses[sl].sum()), size)
            start += size
        out = acc.compute()
        assert out["test/loss"] == pytest.approx(losses.mean(), rel=1e-12)
        assert out["test/accuracy"] == pytest.approx(skm.accuracy_score(targets, logits.argmax(1)))
        assert out["test/f1_macro"] == pytest.approx(skm.f1_score(targets, logits.argmax(1), average="macro"))
    empty = EvalAccumulator([], "val")
    assert math.isnan(empty.compute()["val/loss"])


def test_large_eval_streams_into_fixed_size_state():
    """200k rows in 1000-row batches: the values equal scikit-learn's, and each metric's state stays the
    size of a confusion matrix (nothing is kept per sample). How fast that is is measured by
    ``benchmarks/eval_metrics.py``, not asserted here."""
    n, c = 200_000, 10
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    targets = rng.integers(0, c, size=n)
    names = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
    acc = EvalAccumulator(build_metrics(make_spec(metrics=names), c), "val")
    for i in range(0, n, 1000):
        acc.update(logits[i:i + 1000], targets[i:i + 1000], 0.0, 1000)
        for m in acc.metrics:
            state = sum(v.size for v in vars(m).values() if isinstance(v, np.ndarray))
            assert state <= c * c, f"{m.name} holds {state} values after {i + 1000} rows"
    out = acc.compute()
    pred = logits.argmax(1)
    assert out["val/accuracy"] == pytest.approx(skm.accuracy_score(targets, pred))
    for name in names[1:]:
        kind = name.split("_")[0]
        expected = getattr(skm, f"{kind}_score")(targets, pred, average="macro")
        assert out[f"val/{name}"] == pytest.approx(expected), name
