"""``export/manifest.json``: what an exported model takes, returns and was verified against.

Layout (``manifest_version`` 1)::

    {"manifest_version": 1, "created": "2026-...Z", "task": "classification", "classes": [0, 1, ...],
     "input":  {"name": "inputs", "shape": [null, 64], "dtype": "float32", "features": [...],
                "preprocessing": {"standardize": true, "mean": [...], "std": [...], "in_graph": true}},
     "output": {"name": "outputs", "shape": [null, 10], "dtype": "float32", "kind": "logits",
                "predictions": "argmax"},
     "source": {"run_dir": ..., "name": ..., "backend": "lightning", "keras_backend": null,
                "spec_hash": "sha256:...", "weights": "final"},
     "versions": {...},
     "precision": {"trained": "bf16-mixed", "exported": "float32", "mixed_forward_max_abs_diff": 0.004, ...},
     "artifacts": [{"format": "onnx", "path": "model.onnx", "files": ["model.onnx"],
                    "input_name": "inputs", "output_name": "outputs", "exporter": "...", "runtime": "...",
                    "verification": {"verified": true, "passed": true, "max_abs_diff": 1.2e-07,
                                     "tolerance": 0.0001, "probe": "val split, first 64 rows", "rows": 64,
                                     "reference": "the trained model's forward (float32)"}}]}
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from unified.errors import SpecError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "inputs", "outputs"

# How `predictions` are read off the outputs, per task.
PREDICTIONS = {"classification": "argmax", "binary": "logit > 0", "regression": "outputs"}


def spec_hash(spec: Any) -> str:
    """``sha256:<hex>`` of the resolved spec (canonical JSON, sorted keys)."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_manifest(*, pre: Any, out_shape: tuple[int, ...], source: dict[str, Any], versions: dict[str, str],
                   artifacts: list[dict[str, Any]], precision: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The manifest dict for ``artifacts`` exported from one model.

    ``precision``: ``{"trained": "bf16-mixed", "exported": "float32", "mixed_forward_max_abs_diff": ...}`` (the
    artifacts are float32 graphs of the float32 master weights, whatever precision the run trained in).
    """
    out = {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": pre.task,
        "classes": pre.classes,
        "input": {
            "name": INPUT_NAME, "shape": [None, *map(int, pre.sample_shape)], "dtype": pre.input_dtype,
            "features": list(pre.feature_names),
            "preprocessing": {
                "standardize": pre.standardize, "in_graph": pre.standardize,
                "mean": None if pre.mean is None else np.asarray(pre.mean, dtype=np.float64).tolist(),
                "std": None if pre.std is None else np.asarray(pre.std, dtype=np.float64).tolist(),
            },
        },
        "output": {"name": OUTPUT_NAME, "shape": [None, *out_shape], "dtype": "float32",
                   "kind": "logits" if pre.task != "regression" else "values",
                   "predictions": PREDICTIONS[pre.task]},
        "source": source,
        "versions": versions,
        "artifacts": artifacts,
    }
    if precision is not None:
        out["precision"] = precision
    return out


def load_manifest(path: Path) -> dict[str, Any]:
    """Read and sanity-check a manifest; SpecError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: cannot read the export manifest ({e})") from None
    ok = (isinstance(data, dict) and isinstance(data.get("artifacts"), list)
          and isinstance(data.get("input"), dict) and isinstance(data["input"].get("shape"), list))
    if not ok:
        raise SpecError(f"{path}: not an export manifest (expected keys input.shape and artifacts)")
    return data


def find_artifact(manifest: dict[str, Any], fmt: Optional[str], where: str) -> dict[str, Any]:
    """The manifest entry of ``fmt`` (default: the first listed)."""
    entries = manifest["artifacts"]
    if not entries:
        raise SpecError(f"{where}: the manifest lists no artifacts")
    if fmt is None:
        return entries[0]
    for e in entries:
        if e.get("format") == fmt:
            return e
    have = ", ".join(str(e.get("format")) for e in entries)
    raise SpecError(f"{where}: has no {fmt!r} artifact (it has: {have})")
