"""Metric interface (Ignite-style ``reset`` / ``update`` / ``compute``) and the built-in metrics.

One numpy definition serves every backend: adapters hand each evaluation batch's raw model outputs and
encoded targets (numpy) to an :class:`EvalAccumulator`, which streams them into the metrics.

Conventions for ``outputs``:

* classification: logits ``[b, C]``; the predicted class is ``argmax`` over the last axis.
* binary: one logit ``[b]`` or ``[b, 1]``; predicted positive when ``logit > 0`` (sigmoid > 0.5).
* regression: predictions ``[b]`` or ``[b, k]`` (same number of elements as the targets).

Every built-in accumulates in float64, is vectorised (no Python loop over samples) and returns
``nan`` from ``compute()`` before any update. The results equal scikit-learn's ``accuracy_score``,
``f1_score`` / ``precision_score`` / ``recall_score`` (``average="macro", zero_division=0``),
``roc_auc_score``, ``mean_squared_error``, ``mean_absolute_error`` and ``r2_score``.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from unified.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from unified.spec import Spec

__all__ = [
    "Metric", "Accuracy", "F1Macro", "PrecisionMacro", "RecallMacro", "AUROC", "MSE", "MAE", "R2",
    "BUILTIN_METRICS", "build_metrics", "EvalAccumulator",
]

_TASKS = ("classification", "binary", "regression")


class Metric:
    """Base class for a streaming metric.

    Subclass it, set ``name`` (logged as ``val/<name>`` and ``test/<name>``) and ``higher_is_better``,
    and implement the three methods. The facade calls ``reset()`` before each evaluation pass,
    ``update()`` once per evaluation batch and ``compute()`` at the end of the pass.

    Attributes:
        name: the key suffix under which the value is logged.
        higher_is_better: whether larger values are better.
        task: ``"classification"``, ``"binary"`` or ``"regression"``.
        num_classes: number of classes (2 for binary), None for regression.
    """

    name: str = "metric"
    higher_is_better: bool = True
    tasks: tuple[str, ...] = ("classification", "binary", "regression")  # the tasks a built-in applies to

    def __init__(self, task: str = "classification", num_classes: Optional[int] = None) -> None:
        """Create the metric.

        Args:
            task: the spec's task.
            num_classes: number of classes (classification/binary), None for regression.
        """
        self.task = task
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every update (start a new evaluation pass)."""
        raise NotImplementedError

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        """Add one evaluation batch.

        Args:
            outputs: raw model outputs: logits ``[b, C]`` (classification), one logit ``[b]`` or
                ``[b, 1]`` (binary), predictions ``[b]`` or ``[b, k]`` (regression).
            targets: encoded targets as in ``unified.data.Split.y``: class indices ``[b]``
                (classification), 0./1. ``[b]`` (binary), values ``[b]`` or ``[b, k]`` (regression).
        """
        raise NotImplementedError

    def compute(self) -> float:
        """Return the metric over every batch since the last ``reset()`` as a python float.

        Returns:
            The value, or ``nan`` when nothing was added.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ----------------------------------------------------------------------------------------------------------
# helpers shared by the built-ins
# ----------------------------------------------------------------------------------------------------------

def _binary_scores(outputs: np.ndarray) -> np.ndarray:
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim == 2 and out.shape[1] == 2:  # two logits: the log-odds of class 1
        return out[:, 1] - out[:, 0]
    return out.reshape(-1)


def _class_predictions(outputs: np.ndarray, task: str) -> np.ndarray:
    """Predicted class indices (int64, 1-D) for classification or binary outputs."""
    if task == "binary":
        return (_binary_scores(outputs) > 0).astype(np.int64)
    out = np.asarray(outputs)
    if out.ndim == 1:  # already class indices
        return out.astype(np.int64)
    return np.argmax(out, axis=-1).reshape(-1).astype(np.int64)


def _class_targets(targets: np.ndarray) -> np.ndarray:
    return np.asarray(targets).reshape(-1).astype(np.int64)


def _nan() -> float:
    return float("nan")


class _ClassificationMetric(Metric):
    """Streams a confusion matrix ``cm[true, pred]`` (float64)."""

    tasks = ("classification", "binary")

    def reset(self) -> None:
        n = self.num_classes if self.num_classes else (2 if self.task == "binary" else 0)
        self._cm = np.zeros((n, n), dtype=np.float64)
        self._count = 0

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        pred = _class_predictions(outputs, self.task)
        true = _class_targets(targets)
        if pred.shape[0] != true.shape[0]:
            raise ValueError(f"{self.name}: {pred.shape[0]} predictions but {true.shape[0]} targets")
        if true.size == 0:
            return
        if true.min() < 0 or pred.min() < 0:
            raise ValueError(f"{self.name}: negative class index")
        need = int(max(true.max(), pred.max())) + 1
        c = self._cm.shape[0]
        if need > c:  # num_classes unknown or too small: grow the matrix
            grown = np.zeros((need, need), dtype=np.float64)
            grown[:c, :c] = self._cm
            self._cm, c = grown, need
        self._cm += np.bincount(true * c + pred, minlength=c * c).reshape(c, c)
        self._count += true.size

    def _per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cm = self._cm
        tp = np.diag(cm)
        pred_pos = cm.sum(axis=0)
        true_pos = cm.sum(axis=1)
        present = (pred_pos + true_pos) > 0  # labels in y_true U y_pred, like sklearn
        return tp, pred_pos, true_pos, present


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


class Accuracy(_ClassificationMetric):
    """Fraction of samples whose predicted class equals the target."""

    name = "accuracy"

    def compute(self) -> float:
        if self._count == 0:
            return _nan()
        return float(np.trace(self._cm) / self._count)


class PrecisionMacro(_ClassificationMetric):
    """Unweighted mean over present classes of ``tp / (tp + fp)`` (0 where nothing was predicted)."""

    name = "precision_macro"

    def compute(self) -> float:
        if self._count == 0:
            return _nan()
        tp, pred_pos, _, present = self._per_class()
        return float(_safe_div(tp, pred_pos)[present].mean())


class RecallMacro(_ClassificationMetric):
    """Unweighted mean over present classes of ``tp / (tp + fn)`` (0 where the class never occurs)."""

    name = "recall_macro"

    def compute(self) -> float:
        if self._count == 0:
            return _nan()
        tp, _, true_pos, present = self._per_class()
        return float(_safe_div(tp, true_pos)[present].mean())


class F1Macro(_ClassificationMetric):
    """Unweighted mean over present classes of ``2 tp / (2 tp + fp + fn)`` (0 where undefined)."""

    name = "f1_macro"

    def compute(self) -> float:
        if self._count == 0:
            return _nan()
        tp, pred_pos, true_pos, present = self._per_class()
        return float(_safe_div(2.0 * tp, pred_pos + true_pos)[present].mean())


class AUROC(Metric):
    """Area under the ROC curve for binary tasks, from the logit as score (ties count one half).

    Equals ``sklearn.metrics.roc_auc_score``; ``nan`` when only one class has been seen.
    """

    name = "auroc"
    tasks = ("binary",)

    def __init__(self, task: str = "binary", num_classes: Optional[int] = None) -> None:
        if task != "binary":
            raise SpecError(f"auroc applies to task binary, not {task!r}", path="metrics")
        super().__init__(task=task, num_classes=num_classes)

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        scores = _binary_scores(outputs)
        true = np.asarray(targets, dtype=np.float64).reshape(-1)
        if scores.shape[0] != true.shape[0]:
            raise ValueError(f"{self.name}: {scores.shape[0]} scores but {true.shape[0]} targets")
        self._scores.append(scores)
        self._targets.append(true > 0.5)

    def compute(self) -> float:
        if not self._scores:
            return _nan()
        scores = np.concatenate(self._scores)
        pos = np.concatenate(self._targets)
        n_pos = int(pos.sum())
        n_neg = int(pos.size - n_pos)
        if n_pos == 0 or n_neg == 0:
            return _nan()
        ranks = _average_ranks(scores)
        rank_sum = float(ranks[pos].sum())
        return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (like ``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    avg = ends - (counts - 1) / 2.0
    return avg[inverse.reshape(-1)]


class _RegressionMetric(Metric):
    higher_is_better = False
    tasks = ("regression",)

    @staticmethod
    def _pair(outputs: np.ndarray, targets: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(outputs, dtype=np.float64)
        true = np.asarray(targets, dtype=np.float64)
        if pred.shape != true.shape:
            if pred.size != true.size:
                raise ValueError(f"{name}: outputs of shape {pred.shape} do not match targets of shape {true.shape}")
            pred = pred.reshape(true.shape)
        if true.ndim == 0:
            pred, true = pred.reshape(1), true.reshape(1)
        return pred, true


class MSE(_RegressionMetric):
    """Mean squared error over all elements."""

    name = "mse"

    def reset(self) -> None:
        self._sum = 0.0
        self._n = 0

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        pred, true = self._pair(outputs, targets, self.name)
        diff = pred - true
        self._sum += float(np.dot(diff.ravel(), diff.ravel()))
        self._n += diff.size

    def compute(self) -> float:
        return float(self._sum / self._n) if self._n else _nan()


class MAE(_RegressionMetric):
    """Mean absolute error over all elements."""

    name = "mae"

    def reset(self) -> None:
        self._sum = 0.0
        self._n = 0

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        pred, true = self._pair(outputs, targets, self.name)
        self._sum += float(np.abs(pred - true).sum())
        self._n += pred.size

    def compute(self) -> float:
        return float(self._sum / self._n) if self._n else _nan()


class R2(_RegressionMetric):
    """Coefficient of determination ``1 - SSE / SST`` per output column, uniformly averaged.

    Streams per-column counts, means and centred sums of squares (Chan et al.'s parallel update), so
    it is exact to float64 rounding. Like ``sklearn.metrics.r2_score`` a constant target column scores
    1.0 when predicted perfectly and 0.0 otherwise.
    """

    name = "r2"
    higher_is_better = True

    def reset(self) -> None:
        self._n = 0
        self._mean: Optional[np.ndarray] = None
        self._m2: Optional[np.ndarray] = None
        self._sse: Optional[np.ndarray] = None

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        pred, true = self._pair(outputs, targets, self.name)
        b = true.shape[0]
        if b == 0:
            return
        true = true.reshape(b, -1)
        pred = pred.reshape(true.shape)
        mean_b = true.mean(axis=0)
        m2_b = ((true - mean_b) ** 2).sum(axis=0)
        sse_b = ((true - pred) ** 2).sum(axis=0)
        if self._mean is None:
            self._n, self._mean, self._m2, self._sse = b, mean_b, m2_b, sse_b
            return
        if mean_b.shape != self._mean.shape:
            raise ValueError(f"{self.name}: {mean_b.shape[0]} target columns, "
                             f"earlier batches had {self._mean.shape[0]}")
        n = self._n + b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (b / n)
        self._m2 = self._m2 + m2_b + delta ** 2 * (self._n * b / n)
        self._sse = self._sse + sse_b
        self._n = n

    def compute(self) -> float:
        if self._mean is None:
            return _nan()
        sse, sst = self._sse, self._m2
        scores = np.where(sst > 0, 1.0 - _safe_div(sse, sst), np.where(sse > 0, 0.0, 1.0))
        return float(scores.mean())


# The one list of built-in metrics: the spec's allowed names, per-task lists and "higher is better" derive from it.
BUILTIN_METRICS: dict[str, type[Metric]] = {
    cls.name: cls for cls in (Accuracy, F1Macro, PrecisionMacro, RecallMacro, AUROC, MSE, MAE, R2)
}


def metrics_for_task(task: str) -> tuple[str, ...]:
    """The built-in metric names that apply to ``task``."""
    return tuple(name for name, cls in BUILTIN_METRICS.items() if task in cls.tasks)


HIGHER_IS_BETTER = tuple(name for name, cls in BUILTIN_METRICS.items() if cls.higher_is_better)


# ----------------------------------------------------------------------------------------------------------
# building the spec's metrics
# ----------------------------------------------------------------------------------------------------------

def build_metrics(spec: "Spec", num_classes: Optional[int], base_dir: Optional[str] = None) -> list[Metric]:
    """Instantiate ``spec.resolved_metrics()``: built-in names and user ``{python: {target, kwargs}}``.

    Args:
        spec: the experiment spec (its ``task`` and ``metrics``).
        num_classes: ``Dataset.num_classes`` (2 for binary, None for regression).

    Raises:
        SpecError: a user metric cannot be imported, built, or lacks reset/update/compute
            (``path="metrics[i]"``), or two metrics share a name.
    """
    out: list[Metric] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(spec.resolved_metrics()):
        path = f"metrics[{i}]"
        if isinstance(m, str):
            cls = BUILTIN_METRICS.get(m)
            if cls is None:
                raise SpecError(f"unknown metric {m!r}; expected one of: {', '.join(BUILTIN_METRICS)}", path=path)
            metric = cls(task=spec.task, num_classes=num_classes)
        else:
            metric = _user_metric(m.python.target, dict(m.python.kwargs), spec.task, num_classes, path, base_dir)
        name = metric.name
        if name in seen:
            raise SpecError(f"metric name {name!r} is used twice (metrics[{seen[name]}] and {path})", path=path)
        seen[name] = i
        out.append(metric)
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _user_metric(target: str, kwargs: dict[str, Any], task: str, num_classes: Optional[int], path: str,
                 base_dir: Optional[str] = None) -> Any:
    from unified.models import import_target

    obj: Any = import_target(target, path, base_dir)
    if not isinstance(obj, type):
        raise SpecError(f"{target!r} is not a class (got {type(obj).__name__}); expected a Metric subclass",
                        path=path)
    missing = [meth for meth in ("reset", "update", "compute") if not callable(getattr(obj, meth, None))]
    if missing:
        raise SpecError(f"{target!r} is not a Metric: it lacks {', '.join(missing)} "
                        f"(subclass unified.metrics.Metric)", path=path)
    call_kwargs = dict(kwargs)
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in (("task", task), ("num_classes", num_classes)):
        if key in params and key not in call_kwargs:
            call_kwargs[key] = value
    try:
        metric = obj(**call_kwargs)
    except TypeError as e:
        raise SpecError(f"cannot create {target!r} with kwargs {kwargs!r}: {_one_line(e)}", path=path) from None
    name = _metric_name(metric)
    if not isinstance(name, str) or not name:
        raise SpecError(f"{target!r}: the metric's name must be a non-empty string, got {name!r}", path=path)
    try:
        metric.name = name
    except AttributeError:  # a read-only property that already returns the name
        pass
    return metric


def _metric_name(metric: Any) -> Any:
    """The instance's or class's own ``name`` attribute, else the class name lowercased."""
    if "name" in getattr(metric, "__dict__", {}):
        return metric.__dict__["name"]
    for klass in type(metric).__mro__:
        if klass in (Metric, object):
            break
        if "name" in vars(klass):
            return getattr(metric, "name")
    return type(metric).__name__.lower()


# ----------------------------------------------------------------------------------------------------------
# the adapters' evaluation loop helper
# ----------------------------------------------------------------------------------------------------------

class EvalAccumulator:
    """Streams evaluation batches into the loss average and every metric.

    Args:
        metrics: the metrics from :func:`build_metrics`.
        prefix: ``"val"`` or ``"test"``; the keys are ``<prefix>/loss`` and ``<prefix>/<metric name>``.
    """

    def __init__(self, metrics: list[Metric], prefix: str) -> None:
        self.metrics = list(metrics)
        self.prefix = prefix
        self.reset()

    @property
    def keys(self) -> list[str]:
        """The keys ``compute()`` returns, in order."""
        return [f"{self.prefix}/loss"] + [f"{self.prefix}/{m.name}" for m in self.metrics]

    def reset(self) -> None:
        """Start a new evaluation pass."""
        self._loss_sum = 0.0
        self._count = 0
        for m in self.metrics:
            m.reset()

    def update(self, outputs: np.ndarray, targets: np.ndarray, loss_sum: float, count: int) -> None:
        """Add one batch.

        Args:
            outputs: the model's raw outputs for the batch (numpy).
            targets: the batch's encoded targets (numpy).
            loss_sum: the sum of the per-sample losses over the batch.
            count: the number of samples in the batch.
        """
        outputs = np.asarray(outputs)
        targets = np.asarray(targets)
        self._loss_sum += float(loss_sum)
        self._count += int(count)
        for m in self.metrics:
            m.update(outputs, targets)

    def compute(self) -> dict[str, float]:
        """``{"<prefix>/loss": mean loss, "<prefix>/<name>": value, ...}`` (python floats)."""
        out = {f"{self.prefix}/loss": (self._loss_sum / self._count) if self._count else math.nan}
        for m in self.metrics:
            out[f"{self.prefix}/{m.name}"] = float(m.compute())
        return out
