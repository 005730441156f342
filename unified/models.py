"""Model interface: built-in architectures described once, with portable initial weights.

A built-in model is a :class:`ModelPlan`: the layer sizes plus initial weights drawn from the seed in
numpy, in PyTorch's layout (``layers.<i>.weight`` is ``[out, in]``). Every adapter builds its native
model from the plan and loads these arrays, so every backend starts from identical weights.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from unified.errors import NotSupportedError, SpecError

_INIT_STREAM = 1  # numpy stream id for initial weights (0: split, 2: batch order)


@dataclass
class ModelPlan:
    """A built-in architecture with its initial weights (numpy, PyTorch layout)."""

    arch: str
    in_features: int
    out_features: int
    hidden: list[int]
    activation: str
    dropout: float
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def widths(self) -> list[int]:
        return [self.in_features, *self.hidden, self.out_features]

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1


def mlp_initial_weights(seed: int, widths: list[int]) -> dict[str, np.ndarray]:
    """PyTorch's default ``nn.Linear`` init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from the seed."""
    rng = np.random.default_rng([seed, _INIT_STREAM])
    weights: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        bound = 1.0 / np.sqrt(fan_in)
        weights[f"layers.{i}.weight"] = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
        weights[f"layers.{i}.bias"] = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
    return weights


def build_plan(spec: Any, in_shape: Union[int, Sequence[int]], out_features: int,
               in_dtype: Optional[str] = None) -> Any:
    """The plan of ``spec.model`` (a built-in arch) for samples of ``in_shape`` and ``out_features`` outputs.

    Args:
        spec: the resolved spec.
        in_shape: one sample's shape (an int: a table's feature count).
        out_features: the model's output width.
        in_dtype: the samples' dtype (``int64``: token ids), when known.

    Returns:
        A :class:`ModelPlan` (``mlp``) or a :class:`unified.archs.ArchPlan` (cnn, resnet, lstm, gru, transformer).

    Raises:
        SpecError: the arch cannot take samples of this shape, or a bad arch field.
    """
    from unified.archs import ARCHS, build_arch_plan

    m = spec.model
    shape = (int(in_shape),) if isinstance(in_shape, (int, np.integer)) else tuple(int(d) for d in in_shape)
    if m.arch == "mlp":
        if len(shape) != 1:
            raise SpecError(f"mlp takes rows [n, features], but the samples are shaped {shape}: use an arch for "
                            f"images ({', '.join(a for a in ARCHS if a in ('cnn', 'resnet'))}) or sequences "
                            f"(lstm, gru, transformer), or drop data.shape", path="model.arch")
        plan = ModelPlan("mlp", shape[0], out_features, list(m.hidden), m.activation, m.dropout)
        plan.weights = mlp_initial_weights(spec.seed, plan.widths)
        return plan
    if m.arch in ARCHS:
        return build_arch_plan(m.arch, m.arch_params(), spec.seed, shape, out_features, in_dtype)
    raise NotSupportedError(f"model.arch: {m.arch!r} is not supported; expected mlp, {', '.join(ARCHS)} or a factory")


def import_target(target: str, field: str, base_dir: Optional[str] = None) -> Any:
    """Import ``"module:attr"`` (the current directory and ``base_dir`` on sys.path); SpecError if it fails."""
    module_name, _, attr = target.partition(":")
    for extra in (os.getcwd(), base_dir):
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
    try:
        module = importlib.import_module(module_name)
    except SpecError:
        raise
    except Exception as e:  # ImportError, or an error raised by the user's module itself
        raise SpecError(f"cannot import {module_name!r}: {type(e).__name__}: {e}", path=field) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"module {module_name!r} has no attribute {attr!r}", path=field)
        obj = getattr(obj, part)
    return obj


def call_factory(
    fn: Callable[..., Any], *, in_features: int, out_features: int, task: str, kwargs: dict[str, Any],
    in_shape: Optional[Sequence[int]] = None,
) -> Any:
    """Call a model factory with the arguments it accepts.

    It receives ``in_features`` (values per sample) and ``in_shape`` (one sample's shape, e.g. ``(1, 8, 8)``),
    then ``num_classes`` (classification) or ``out_features`` (binary: 1, regression: the target width), then
    the spec's ``model.kwargs``.
    """
    offered: dict[str, Any] = {"in_features": in_features,
                               "in_shape": tuple(in_shape) if in_shape is not None else (in_features,)}
    if task == "classification":
        offered["num_classes"] = out_features
    offered["out_features"] = out_features
    offered.update(kwargs)
    legacy = {k: v for k, v in offered.items() if k != "in_shape"}  # in_shape only to factories that name it
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(**legacy)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        call = offered if "in_shape" in params else legacy
    else:
        call = {k: v for k, v in offered.items() if k in params}
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise SpecError(
                f"factory {getattr(fn, '__name__', fn)!r} takes no argument {unknown[0]!r} "
                f"(it accepts: {', '.join(params)})",
                path="model.kwargs",
            )
    missing = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in call
    ]
    if missing:
        raise SpecError(
            f"factory {getattr(fn, '__name__', fn)!r} needs {', '.join(missing)}, which the spec does not give "
            f"(offered: {', '.join(offered)}; add it under model.kwargs)",
            path="model.factory",
        )
    return fn(**call)
