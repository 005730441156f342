"""Export trained models (ONNX, TorchScript, SavedModel, .keras, TFLite) with verification.

Framework-free at import: the per-framework code is in the adapters' exporter modules and the
runtimes are imported when an artifact is loaded. Entry points:

* :func:`export_trainer`: the model a :class:`~unified.trainer.UnifiedTrainer` just trained
  (``trainer.export([...])``, and the spec's ``export:`` section at the end of ``fit``).
* :func:`export_run_dir`: rebuild the model of a finished run directory and export it
  (``unified export RUN_DIR --format ...``).

Both write ``<run_dir>/export/`` (artifacts + ``manifest.json``) through a temporary directory renamed
into place, and raise :class:`~unified.errors.VerificationError` when an artifact differs from the
trained model by more than the tolerance.
"""

from __future__ import annotations

from unified.export.artifacts import FORMATS, check_formats, export_model, parse_formats
from unified.export.manifest import MANIFEST, load_manifest
from unified.export.preprocess import Preprocess
from unified.export.sources import export_run_dir, export_trainer

__all__ = ["FORMATS", "MANIFEST", "Preprocess", "check_formats", "export_model", "export_run_dir", "export_trainer",
           "load_manifest", "parse_formats"]
