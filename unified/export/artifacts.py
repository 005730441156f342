"""Export a trained model to every requested format, verify each artifact, write ``manifest.json``.

The per-framework work lives in the adapter's exporter module (``adapters/export_torch.py``,
``adapters/export_keras.py``, named by the adapter's ``exporter`` attribute): it wraps the trained model
with the standardization baked in and writes the files. This module is framework-free: it checks
what can be exported before anything runs, reloads every artifact in its own runtime
(:mod:`unified.export.runtimes`), compares it with the trained model's own predictions on a probe batch
of raw features, and moves the finished directory into place in one rename.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from unified.errors import BackendUnavailableError, NotSupportedError, SpecError, VerificationError
from unified.export.manifest import MANIFEST, build_manifest
from unified.export.preprocess import Preprocess
from unified.export.runtimes import RUNTIMES, load_runner, runtime_missing
from unified.files import atomic_write_json

FORMATS = ("onnx", "torchscript", "savedmodel", "keras", "tflite")

# Where each format comes from (for messages; `unified backends` and the README table say the same).
FORMAT_SOURCES = {
    "onnx": "lightning, ignite, keras (tensorflow or torch)",
    "torchscript": "lightning, ignite, keras on torch",
    "savedmodel": "keras on tensorflow",
    "keras": "keras (tensorflow or torch)",
    "tflite": "keras on tensorflow",
}

_VERSION_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "tf2onnx", "torch", "tensorflow", "tensorflow-cpu",
                     "keras", "pytorch-lightning", "pytorch-ignite")


def parse_formats(value: Union[str, list[str], tuple[str, ...], None], where: str = "--format") -> list[str]:
    """``"onnx,torchscript"`` or a list -> validated, de-duplicated format names (SpecError otherwise)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            close = difflib.get_close_matches(name, FORMATS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"unknown export format {raw!r}{hint} (expected one of: {', '.join(FORMATS)})",
                            path=where)
        if name not in out:
            out.append(name)
    if not out:
        raise SpecError(f"no export format given (expected one or more of: {', '.join(FORMATS)})", path=where)
    return out


def check_formats(adapter_cls: Any, spec: Any, formats: list[str], *, verify: bool = True) -> None:
    """Refuse, before anything runs, a format the backend cannot give or whose tools are missing.

    Raises:
        NotSupportedError: naming the formats this backend gives and where the refused one comes from.
        BackendUnavailableError: an exporter or runtime package is not installed (with the pip hint).
    """
    if not formats:
        return
    gives = adapter_cls.export_formats_for(spec) if hasattr(adapter_cls, "export_formats_for") else frozenset()
    where = adapter_cls.label(spec)
    refused = [f for f in formats if f not in gives]
    if refused:
        offer = ", ".join(f for f in FORMATS if f in gives) or "no format"
        parts = "; ".join(f"{f} comes from {FORMAT_SOURCES[f]}" for f in refused)
        what = f"format {refused[0]} is" if len(refused) == 1 else f"formats {', '.join(refused)} are"
        raise NotSupportedError(f"export {what} not available from backend {where}, "
                                f"which gives {offer} ({parts})")
    exporter = _exporter(adapter_cls)
    for fmt in formats:
        need = list(exporter.requires(fmt, spec))
        if verify:
            need += [m for m in runtime_missing(fmt) if m not in need]
        missing = [m for m in need if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailableError(
                f"export format {fmt!r} from backend {where} needs {', '.join(missing)}, which is not installed: "
                f'pip install "unified-trainer[export]"')


def _exporter(adapter_cls: Any) -> Any:
    name = getattr(adapter_cls, "exporter", None)
    if not name:
        raise NotSupportedError(f"backend {adapter_cls.name!r} has no exporter")
    return importlib.import_module(name)


def export_model(adapter: Any, spec: Any, pre: Preprocess, probe: np.ndarray, probe_desc: str, formats: list[str],
                 out_dir: Union[str, os.PathLike[str]], *, verify: bool = True, tolerance: float = 1e-4,
                 source: Optional[dict[str, Any]] = None,
                 rebuilt: Optional[dict[str, tuple[Any, Any, str]]] = None) -> dict[str, Any]:
    """Export ``adapter``'s trained model to ``formats`` in ``out_dir`` and return the manifest.

    Args:
        adapter: the backend adapter holding the trained model.
        spec: the resolved spec of the run.
        pre: the input contract (standardization goes into every artifact).
        probe: raw features ``[n, in_features]`` the artifacts are verified on.
        probe_desc: where the probe came from (goes into the manifest).
        formats: validated format names.
        out_dir: the export directory; replaced as a whole when the export succeeds.
        verify: reload and compare every artifact.
        tolerance: the largest accepted absolute output difference.
        source: run information for the manifest (``run_dir``, ``weights``, ...).
        rebuilt: format -> (adapter, spec, label) for formats ``adapter``'s backend does not give, written by
            another backend's adapter holding the same portable weights (a built-in arch rebuilt on Keras from
            a torch run, for SavedModel / TFLite); its outputs must equal the trained model's within
            ``tolerance`` before anything is written, and its artifacts are verified against the trained model.

    Raises:
        VerificationError: an artifact (or a rebuilt model) differs from the trained model by more than
            ``tolerance`` (nothing is written).
    """
    adapter_cls = type(adapter)
    rebuilt = dict(rebuilt or {})
    check_formats(adapter_cls, spec, [f for f in formats if f not in rebuilt], verify=verify)
    for fmt, (other, other_spec, _) in rebuilt.items():
        check_formats(type(other), other_spec, [fmt], verify=verify)
    out_dir = Path(out_dir)
    probe = np.ascontiguousarray(probe, dtype=np.int64 if pre.input_dtype == "int64" else np.float32)
    if list(probe.shape[1:]) != list(pre.sample_shape):
        raise SpecError(f"probe batch must be [n, {', '.join(map(str, pre.sample_shape))}], got shape {probe.shape}")
    if len(probe) < 2:  # a batch of 2+ keeps the batch axis dynamic in traced graphs
        probe = np.concatenate([probe, probe])
    reference, ref_desc, precision = _reference(adapter, spec, pre.apply(probe))
    for other, other_spec, label in {id(v[0]): v for v in rebuilt.values()}.values():
        got = np.asarray(_float32_forward(other, other_spec, pre.apply(probe)), dtype=np.float64)
        gap = float(np.abs(got - reference.astype(np.float64)).max()) if got.shape == reference.shape else float("inf")
        if not gap <= tolerance:
            raise VerificationError(f"the model rebuilt on {label} from the portable weights differs from the trained "
                                    f"model by {gap:.3g} (above the tolerance {tolerance:g}); nothing was written")
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise SpecError(f"{out_dir}: exists and is not an export directory (no {MANIFEST}); choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        entries = []
        for fmt in formats:
            start = time.perf_counter()
            by, label = (rebuilt[fmt][0], rebuilt[fmt][2]) if fmt in rebuilt else (adapter, None)
            info = _exporter(type(by)).export(by, fmt, tmp, pre, probe[:2])
            entry: dict[str, Any] = {"format": fmt, **info, "export_time_s": round(time.perf_counter() - start, 3)}
            if label is not None:
                entry["rebuilt_on"] = label
            entry["verification"] = _verify(fmt, tmp, entry, probe, reference, tolerance, probe_desc) if verify \
                else {"verified": False, "passed": None, "tolerance": tolerance}
            entry["verification"]["reference"] = ref_desc
            entry["runtime"] = entry["verification"].pop("runtime", None)
            entries.append(entry)
        manifest = build_manifest(pre=pre, out_shape=tuple(reference.shape[1:]), source=dict(source or {}),
                                  versions=_versions(adapter_cls), artifacts=entries, precision=precision)
        failed = [e for e in entries if e["verification"].get("passed") is False]
        if failed:
            raise VerificationError("; ".join(_failure(e) for e in failed) + "; nothing was written")
        atomic_write_json(tmp / MANIFEST, manifest)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _float32_forward(adapter: Any, spec: Any, x: np.ndarray) -> np.ndarray:
    """What the exported artifact computes on model inputs ``x``: the trained weights in float32.

    A run trained in float32 predicts exactly that; a mixed-precision run (``bf16-mixed`` / ``16-mixed``: autocast
    on torch, a mixed dtype policy on Keras) predicts in lower precision, and its exporter module gives the
    float32 forward (``float32_predict``), the same function of the same float32 master weights it exports.
    """
    if spec.trainer.precision == "32":
        return np.asarray(adapter.predict(x), dtype=np.float32)
    return np.asarray(_exporter(type(adapter)).float32_predict(adapter, x), dtype=np.float32)


def _reference(adapter: Any, spec: Any, x: np.ndarray) -> tuple[np.ndarray, str, dict[str, Any]]:
    """The outputs the artifacts are verified against, their description, and the manifest's ``precision``.

    For a mixed-precision run the reference is the float32 forward of the trained weights (what the artifacts
    compute); how far the mixed-precision forward is from it is recorded, for information only.
    """
    trained = spec.trainer.precision
    reference = _float32_forward(adapter, spec, x)
    if trained == "32":
        return reference, "the trained model's forward (float32)", {"trained": trained, "exported": "float32"}
    mixed = np.asarray(adapter.predict(x), dtype=np.float64)
    gap = float(np.abs(mixed - reference.astype(np.float64)).max()) if mixed.shape == reference.shape \
        and mixed.size else None
    info = {"trained": trained, "exported": "float32", "mixed_forward_max_abs_diff": gap,
            "note": f"the artifacts compute in float32 with the float32 master weights; the {trained} forward "
                    f"differs from them by {gap:.3g} (information, not verified)" if gap is not None else None}
    return reference, f"float32 forward of the trained weights (trained with {trained})", info


def _verify(fmt: str, root: Path, entry: dict[str, Any], probe: np.ndarray, reference: np.ndarray,
            tolerance: float, probe_desc: str) -> dict[str, Any]:
    result: dict[str, Any] = {"verified": True, "tolerance": tolerance, "probe": probe_desc, "rows": int(len(probe)),
                              "runtime": RUNTIMES[fmt][0] if fmt in RUNTIMES else fmt}
    try:
        runner = load_runner(fmt, root / entry["path"], entry)
    except BackendUnavailableError:
        raise  # the runtime is not installed: the pip hint (check_formats refuses it before anything runs)
    except Exception as e:  # noqa: BLE001 - the runtime cannot load what was written (a type mismatch, an op ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        result.update(passed=False, max_abs_diff=None, error=f"{result['runtime']} cannot load it: {first}")
        return result
    result["runtime"] = runner.runtime
    try:
        got = runner(probe)
    except Exception as e:  # noqa: BLE001 - the runtime cannot run what was written (an op it lacks, a shape ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        result.update(passed=False, max_abs_diff=None, error=f"{runner.runtime} cannot run it: {first}")
        return result
    if got.size != reference.size:
        result.update(passed=False, max_abs_diff=None,
                      error=f"output shape {list(got.shape)} differs from the model's {list(reference.shape)}")
        return result
    diff = np.abs(got.reshape(reference.shape).astype(np.float64) - reference.astype(np.float64))
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.isfinite(diff).all():
        worst = float("inf")
    result.update(passed=bool(worst <= tolerance), max_abs_diff=worst)
    return result


def _failure(entry: dict[str, Any]) -> str:
    v = entry["verification"]
    if v.get("error"):
        return f"{entry['format']} artifact failed verification: {v['error']}"
    return (f"{entry['format']} artifact differs from the trained model by {v['max_abs_diff']:.3g} "
            f"(max abs over {v['rows']} probe rows), above the tolerance {v['tolerance']:g}")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp``: two renames, the old directory removed afterwards."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions(adapter_cls: Any) -> dict[str, str]:
    from unified import __version__

    out = {"python": platform.python_version(), "unified-trainer": __version__, "numpy": np.__version__}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
