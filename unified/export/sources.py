"""Where the model to export comes from: a trainer that just trained it, or a finished run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from unified.errors import DataError, NotSupportedError, SpecError
from unified.export.artifacts import export_model, parse_formats
from unified.export.manifest import spec_hash
from unified.files import read_json_object
from unified.export.preprocess import Preprocess, probe_from_dataset, synthetic_probe
from unified.registry import get_entry

FINAL_WEIGHTS = "final.npz"  # checkpoints/final.npz: the weights fit() ended with


def save_final_weights(run_dir: Union[str, os.PathLike[str]], weights: dict[str, np.ndarray]) -> None:
    """Write ``checkpoints/final.npz`` (portable weights, PyTorch names and layout) atomically."""
    from unified.files import atomic_write

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **weights)

    atomic_write(Path(run_dir) / "checkpoints" / FINAL_WEIGHTS, _write)


def _settings(spec: Any, formats: Any, verify: Optional[bool], tolerance: Optional[float], where: str = "formats"
              ) -> tuple[list[str], bool, float]:
    fmts = parse_formats(formats if formats else (spec.export.formats or ["onnx"]),
                         where if formats else "export.formats")
    verify = spec.export.verify if verify is None else bool(verify)
    tolerance = spec.export.tolerance if tolerance is None else float(tolerance)
    if not tolerance > 0:
        raise SpecError(f"must be > 0, got {tolerance}", path="tolerance")
    return fmts, verify, tolerance


def export_trainer(trainer: Any, formats: Union[str, list[str], None] = None, *,
                   out: Union[str, os.PathLike[str], None] = None, verify: Optional[bool] = None,
                   tolerance: Optional[float] = None) -> dict[str, Any]:
    """Export the model ``trainer`` trained (see :meth:`UnifiedTrainer.export`). Returns the manifest."""
    adapter, ctx = trainer._require_fit()
    spec = trainer.spec
    fmts, verify, tolerance = _settings(spec, formats, verify, tolerance)
    if ctx.dataset is None:
        raise NotSupportedError("export needs the input width and a probe batch: train with arrays or the spec's "
                                "data (fit(data=<native loaders>) gives neither)")
    pre = Preprocess.from_dataset(ctx.dataset, "fit(model=...)" if ctx.user_model is not None else "spec")
    probe, desc = probe_from_dataset(ctx.dataset, pre)
    source = {"run_dir": str(trainer.run_dir), "name": spec.name, "backend": trainer.backend,
              "keras_backend": trainer.entry.variant_value(spec),
              "spec_hash": spec_hash(spec), "weights": "the trained model in memory (end of fit)",
              "model_from": pre.model_from}
    out_dir = Path(out) if out is not None else Path(trainer.run_dir) / "export"
    return export_model(adapter, spec, pre, probe, desc, fmts, out_dir, verify=verify, tolerance=tolerance,
                        source=source)


def export_run_dir(run_dir: Union[str, os.PathLike[str]], formats: Union[str, list[str], None] = None, *,
                   out: Union[str, os.PathLike[str], None] = None, weights: Optional[str] = None,
                   verify: Optional[bool] = None, tolerance: Optional[float] = None) -> dict[str, Any]:
    """Rebuild the model of a finished run in its backend and export it.

    Args:
        run_dir: the run directory (``spec.yaml``, ``summary.json``, ``preprocess.json``, ``checkpoints/``).
        formats: ``"onnx,torchscript"`` or a list; default: the spec's ``export.formats``, else ``onnx``.
        out: the export directory (default ``<run_dir>/export``).
        weights: ``final`` (the weights fit ended with; the default, falling back to ``last`` then ``best``),
            ``last``, ``best`` or the path of a portable ``.npz``.
        verify: reload and compare every artifact (default: the spec's ``export.verify``).
        tolerance: the largest accepted output difference (default: the spec's ``export.tolerance``).

    Returns:
        The manifest written to ``<out>/manifest.json``.
    """
    from unified.context import RunContext
    from unified.models import build_plan
    from unified.registry import load_adapter
    from unified.spec import load_spec

    root = Path(run_dir)
    if not (root / "spec.yaml").is_file():
        raise SpecError(f"{root}: not a run directory (no spec.yaml)")
    spec = load_spec(root / "spec.yaml")
    summary = read_json_object(root / "summary.json") or {}
    backend = summary.get("backend") or spec.backend
    if not backend:
        raise SpecError(f"{root}: neither summary.json nor spec.yaml names the backend")
    if backend != spec.backend:
        spec = spec.resolved(backend=backend)
    fmts, verify, tolerance = _settings(spec, formats, verify, tolerance, "--format")
    adapter_cls = load_adapter(backend)
    from unified.export.artifacts import check_formats

    foreign = [f for f in fmts if f not in adapter_cls.export_formats_for(spec)]
    rebuild_on = _rebuilders(spec, backend, foreign) if foreign and spec.model.arch is not None else {}
    check_formats(adapter_cls, spec, [f for f in fmts if f not in rebuild_on], verify=verify)
    weights_path = _weights_file(root, weights)

    dataset, data_note = None, None
    try:
        from unified.data import load_dataset

        dataset = load_dataset(spec)
    except (DataError, SpecError, OSError) as e:
        data_note = str(e)
    pre = Preprocess.load(root)
    if pre is None:
        if dataset is None:
            raise SpecError(f"{root}: has no preprocess.json (written by newer versions) and its data cannot be "
                            f"loaded to rebuild it: {data_note}")
        pre = Preprocess.from_dataset(dataset)
    if pre.model_from != "spec":
        raise NotSupportedError(f"{root}: the run trained a model passed to fit(model=...), which spec.yaml cannot "
                                f"rebuild; export it from the training process with trainer.export([...])")
    if dataset is not None and (list(dataset.sample_shape), dataset.out_features) != (list(pre.sample_shape),
                                                                                       pre.out_features):
        dataset, data_note = None, "the data no longer matches the run's input/output widths"
    if dataset is not None:
        probe, desc = probe_from_dataset(dataset, pre)
    else:
        probe = synthetic_probe(pre, spec.seed)
        desc = f"synthetic: mean + std * N(0, 1), {len(probe)} rows (the run's data is not readable: {data_note})"

    shape = dataset if dataset is not None else _Shape(pre)
    plan = (build_plan(spec, pre.sample_shape, pre.out_features, pre.input_dtype) if spec.model.arch is not None
            else None)
    # Rebuilding the model trains nothing: no scheduler (its defaults may need the data's length).
    ctx = RunContext(spec=spec.resolved(scheduler=None), backend=backend, run_dir=root, events=None,  # type: ignore[arg-type]
                     metrics=[],
                     dataset=shape, plan=plan)  # type: ignore[arg-type]
    adapter = _with_weights(adapter_cls(ctx), weights_path)
    rebuilt: dict[str, tuple[Any, Any, str]] = {}
    adapters: dict[str, tuple[Any, str]] = {}  # other backend -> (its adapter, label): one per backend
    for fmt, (name, other_spec, other_cls) in rebuild_on.items():
        if name not in adapters:
            other_ctx = RunContext(spec=other_spec.resolved(scheduler=None), backend=name, run_dir=root,
                                   events=None, metrics=[], dataset=shape, plan=plan)  # type: ignore[arg-type]
            adapters[name] = (_with_weights(other_cls(other_ctx), weights_path), other_cls.label(other_spec))
        rebuilt[fmt] = (adapters[name][0], other_spec, adapters[name][1])
    source = {"run_dir": str(root), "name": spec.name, "backend": backend,
              "keras_backend": get_entry(backend).variant_value(spec), "spec_hash": spec_hash(spec),
              "weights": str(weights_path.relative_to(root)) if weights_path.is_relative_to(root) else str(weights_path),
              "status": summary.get("status"), "model_from": pre.model_from}
    out_dir = Path(out) if out is not None else root / "export"
    return export_model(adapter, spec, pre, probe, desc, fmts, out_dir, verify=verify, tolerance=tolerance,
                        source=source, rebuilt=rebuilt)


def _with_weights(adapter: Any, weights_path: Path) -> Any:
    """``adapter`` with the portable weights of ``weights_path`` loaded (SpecError when they do not fit)."""
    try:
        with np.load(weights_path) as npz:
            adapter.set_weights({k: npz[k] for k in npz.files})
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise SpecError(f"{weights_path}: does not fit the model spec.yaml describes ({type(e).__name__}: {first})"
                        ) from None
    return adapter


def _rebuilders(spec: Any, run_backend: str, wanted: list[str]) -> dict[str, tuple[str, Any, Any]]:
    """format -> (backend, spec, adapter class) of another installed backend that gives it, for a built-in
    arch (its portable weights load on every backend): a torch run's SavedModel / TFLite come from Keras.

    The variant this process already uses (or would use) is tried first: Keras picks its tensor backend once
    per process, so a format of another Keras backend is found only before Keras is imported.
    """
    from unified.registry import get_entry, installed_backends, load_adapter

    found: dict[str, tuple[str, Any, Any]] = {}
    for name in installed_backends():
        if name == run_backend or all(f in found for f in wanted):
            continue
        entry = get_entry(name)
        values: list[Optional[str]] = [None]
        if entry.variant is not None:
            values = list(dict.fromkeys([entry.variant.resolve(None), *entry.variant.installed_choices()]))
        cls = load_adapter(name)
        for value in values:
            other = spec.resolved(backend=name, **({entry.variant.field: value} if entry.variant else {}))
            gives = cls.export_formats_for(other)
            for fmt in wanted:
                if fmt in gives and fmt not in found:
                    found[fmt] = (name, other, cls)
    return found


class _Shape:
    """Stands in for the Dataset when the run's data is unreadable and only the widths are known: enough to
    rebuild the model (nothing trains, so there are no batches)."""

    def __init__(self, pre: Preprocess) -> None:
        self.in_features, self.out_features = pre.in_features, pre.out_features
        self.sample_shape, self.input_dtype = tuple(pre.sample_shape), pre.input_dtype
        self.task, self.classes = pre.task, pre.classes
        self.num_classes = None if pre.classes is None else len(pre.classes)
        self.train = self.val = self.test = None

    def steps_per_epoch(self) -> None:
        return None  # unknown: the loop's length is never needed to export


def _weights_file(root: Path, weights: Optional[str]) -> Path:
    ck = root / "checkpoints"
    if weights is None or weights == "final":
        order = ["final", "last", "best"] if weights is None else ["final"]
        for name in order:
            if (ck / f"{name}.npz").is_file():
                return ck / f"{name}.npz"
        have = sorted(p.name for p in ck.glob("*.npz")) if ck.is_dir() else []
        raise SpecError(f"{root}: no portable weights to export (looked for checkpoints/"
                        f"{', '.join(n + '.npz' for n in order)}; found: {', '.join(have) or 'none'}). "
                        f"Runs write checkpoints/final.npz when they finish")
    if weights in ("last", "best"):
        path = ck / f"{weights}.npz"
    else:
        path = Path(weights)
        if not path.is_absolute() and not path.exists():
            path = root / weights
    if not path.is_file():
        raise SpecError(f"weights file not found: {path}", path="--weights")
    if path.suffix != ".npz":
        raise SpecError(f"expected portable weights (.npz, PyTorch names and layout), got {path.name}",
                        path="--weights")
    return path

