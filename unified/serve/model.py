"""The model behind the server: which artifact, its manifest, its runtime, its name and sample shape."""

from __future__ import annotations

import importlib.util
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from unified.errors import BackendUnavailableError, SpecError
from unified.export.manifest import MANIFEST, find_artifact, load_manifest
from unified.export.runtimes import Runner, load_runner
from unified.serve.images import ImageInput, image_input

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Runtime names as Triton reports them in a model's "platform".
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "savedmodel": "tensorflow_savedmodel",
             "keras": "keras", "tflite": "tflite"}


@dataclass
class ServedModel:
    """A loaded artifact and what the protocols need to describe it.

    Attributes:
        name: the model's name in ``/v2/models/{name}`` and ``/v1/models/{name}``.
        manifest: the export manifest (or one read off a bare ``.onnx`` graph).
        entry: the manifest's entry of the served artifact.
        runner: calls the runtime on a float32 batch.
        load_time_s: seconds it took to load the runtime.
        image: how an uploaded image file becomes a sample (a model trained on ``imagefolder:``), else None.
    """

    name: str
    manifest: dict[str, Any]
    entry: dict[str, Any]
    runner: Runner
    load_time_s: float = 0.0
    version: str = "1"
    image: Optional[ImageInput] = None
    sample_shape: tuple[Optional[int], ...] = field(init=False)
    output_shape: tuple[Optional[int], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sample_shape = _sample_shape(self.manifest)
        out = self.manifest.get("output", {}).get("shape") or [None, None]
        self.output_shape = tuple(d if isinstance(d, int) else None for d in out[1:])

    @property
    def input_dtype(self) -> str:
        """``float32``, or ``int64`` for a model taking token ids."""
        return "int64" if self.manifest["input"].get("dtype") == "int64" else "float32"

    @property
    def input_name(self) -> str:
        return self.manifest["input"].get("name") or "inputs"

    @property
    def output_name(self) -> str:
        return self.manifest.get("output", {}).get("name") or "outputs"

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.entry["format"], self.entry["format"])

    def predictions(self, outputs: np.ndarray) -> list:
        """Class labels or values read off ``outputs`` (see :func:`predictions`)."""
        return predictions(self.manifest, outputs)


def _sample_shape(manifest: dict[str, Any]) -> tuple[Optional[int], ...]:
    shape = manifest["input"].get("shape") or [None, None]
    return tuple(d if isinstance(d, int) else None for d in shape[1:])


def load_model(artifact: Union[str, Path], fmt: Optional[str] = None, name: Optional[str] = None) -> ServedModel:
    """Resolve ``artifact``, load it in its runtime and name it.

    Args:
        artifact: an export directory, a run directory or an artifact file.
        fmt: which artifact of the manifest (default: onnx, else the first one).
        name: the model's name (default: the spec's ``name`` from the manifest, else the file's stem).

    Raises:
        SpecError: no such artifact, no manifest, or an invalid name.
        BackendUnavailableError: the runtime is not installed.
    """
    manifest, entry, path = resolve_artifact(artifact, fmt)
    if name is None:
        name = default_model_name(manifest, path)
    elif not NAME_RE.match(name):
        raise SpecError(f"{name!r} is not a usable model name: letters, digits, '.', '_', '-' (at most 128, "
                        f"starting with a letter or digit)", path="--model-name")
    listed = entry.get("path") == path.name and (path.parent / MANIFEST).is_file()  # not a bare .onnx
    image = image_input(manifest, path.parent if listed else None, _sample_shape(manifest))
    start = time.perf_counter()
    runner = _onnx_for_serving(path, entry) if entry["format"] == "onnx" else None
    runner = runner or load_runner(entry["format"], path, entry)
    return ServedModel(name, manifest, entry, runner, load_time_s=time.perf_counter() - start, image=image)


def _onnx_for_serving(path: Path, entry: dict[str, Any]) -> Optional[Runner]:
    """An onnxruntime session tuned for a server: intra-op threads sleep between calls instead of spinning.

    By default onnxruntime's worker threads busy-wait after each call; in a server they then take the
    cores the event loop needs to read and parse the next requests (one measurement on a loaded 2-core
    machine, a 4096-wide MLP under 16 clients: batched throughput x1.7 of unbatched with spinning, x2.2
    without). None when onnxruntime is missing (:func:`load_runner` then names the pip extra).
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = entry.get("input_name") or session.get_inputs()[0].name
    out = entry.get("output_name") or session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out], {name: x})[0]

    return Runner("onnx", f"onnxruntime {ort.__version__}", run)  # InferenceSession.run is thread-safe


def default_model_name(manifest: dict[str, Any], path: Path) -> str:
    """The spec's ``name`` recorded in the manifest (else the artifact's stem), made URL-safe."""
    raw = str((manifest.get("source") or {}).get("name") or path.stem or "model")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:128]
    return name or "model"


def resolve_artifact(artifact: Union[str, Path], fmt: Optional[str] = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(manifest, artifact entry, artifact path) for an export dir, a run dir or an artifact file.

    A bare ``.onnx`` file without a manifest beside it is served with a manifest read off the graph
    (no class labels: ``predictions`` are then the outputs).
    """
    path = Path(artifact)
    if not path.exists():
        raise SpecError(f"{path}: no such file or directory", path="ARTIFACT")
    if path.is_dir():
        root = path if (path / MANIFEST).is_file() else path / "export"
        if not (root / MANIFEST).is_file():
            raise SpecError(f"{path}: no {MANIFEST} here or in {path / 'export'}; pass an export directory, a run "
                            f"directory with export/, or a .onnx file (create one with `unified export RUN_DIR`)",
                            path="ARTIFACT")
        manifest = load_manifest(root / MANIFEST)
        if fmt is None and any(e.get("format") == "onnx" for e in manifest["artifacts"]):
            fmt = "onnx"
        entry = find_artifact(manifest, fmt, str(root / MANIFEST))
        return manifest, entry, root / entry["path"]
    beside = path.parent / MANIFEST
    if beside.is_file():
        manifest = load_manifest(beside)
        for entry in manifest["artifacts"]:
            if entry.get("path") == path.name:
                return manifest, entry, path
    if path.suffix != ".onnx":
        raise SpecError(f"{path}: serving a {path.suffix or 'extension-less'} file needs the {MANIFEST} written "
                        f"beside it by `unified export`; a bare file can only be a .onnx", path="ARTIFACT")
    return _bare_onnx_manifest(path), {"format": "onnx", "path": path.name}, path


def _bare_onnx_manifest(path: Path) -> dict[str, Any]:
    require("onnxruntime")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise SpecError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})", path="ARTIFACT") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    dims = [d if isinstance(d, int) else None for d in inp.shape[1:]] or [None]
    return {"manifest_version": 1, "task": None, "classes": None,
            "input": {"name": inp.name, "shape": [None, *dims], "dtype": "float32"},
            "output": {"name": out.name, "shape": [None, *[d if isinstance(d, int) else None for d in out.shape[1:]]],
                       "dtype": "float32", "predictions": "outputs"},
            "source": {"file": str(path), "name": path.stem},
            "artifacts": [{"format": "onnx", "path": path.name, "input_name": inp.name, "output_name": out.name}]}


def require(module: str, extra: str = "serve") -> None:
    """Raise :class:`BackendUnavailableError` with the pip hint when ``module`` is not installed."""
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f'`unified serve` needs {module}: pip install "unified-trainer[{extra}]"')


def predictions(manifest: dict[str, Any], outputs: np.ndarray) -> list:
    """Class labels (classification, binary) or values (regression) read off the outputs."""
    task, classes = manifest.get("task"), manifest.get("classes")
    if task == "classification":
        idx = outputs.reshape(len(outputs), -1).argmax(axis=1)
        return [classes[i] for i in idx.tolist()] if classes else idx.tolist()
    if task == "binary":
        idx = (outputs.reshape(len(outputs), -1)[:, 0] > 0).astype(np.int64)
        return [classes[i] for i in idx.tolist()] if classes else idx.tolist()
    flat = outputs.reshape(len(outputs), -1)
    return flat[:, 0].tolist() if flat.shape[1] == 1 else flat.tolist()
