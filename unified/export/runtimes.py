"""Load an exported artifact in its own runtime and run it on raw features.

Each loader imports its runtime lazily (onnxruntime, torch, tensorflow, keras) and returns a
:class:`Runner`: ``runner(x)`` takes a ``[n, *sample_shape]`` numpy array of raw features (float32, or
int64 token ids) and returns the model's outputs as a float32 numpy array. Verification and ``unified serve`` both use them.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unified.errors import BackendUnavailableError, NotSupportedError

# format -> (runtime description, modules it needs, pip extra)
RUNTIMES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "onnx": ("onnxruntime", ("onnxruntime",), "serve"),
    "torchscript": ("torch.jit.load", ("torch",), "lightning"),
    "savedmodel": ("tf.saved_model.load", ("tensorflow",), "keras"),
    "keras": ("keras.saving.load_model", ("keras",), "keras"),
    "tflite": ("the TFLite interpreter", ("tensorflow",), "keras"),
}


@dataclass
class Runner:
    """A loaded artifact: call it with raw features, get outputs (thread-safe)."""

    fmt: str
    runtime: str
    fn: Callable[[np.ndarray], np.ndarray]
    lock: Any = None  # runtimes that are not thread-safe (TFLite, ...) are serialized

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        x = np.ascontiguousarray(x, dtype=np.int64 if x.dtype == np.int64 else np.float32)  # token ids stay int64
        if self.lock is None:
            return np.asarray(self.fn(x), dtype=np.float32)
        with self.lock:
            return np.asarray(self.fn(x), dtype=np.float32)


def runtime_missing(fmt: str) -> list[str]:
    """The modules ``fmt``'s runtime needs that are not installed here."""
    return [m for m in RUNTIMES[fmt][1] if importlib.util.find_spec(m) is None]


def load_runner(fmt: str, path: Path, entry: dict[str, Any]) -> Runner:
    """Load ``path`` (a file or directory written by the exporter) in the runtime of ``fmt``.

    Args:
        fmt: ``onnx``, ``torchscript``, ``savedmodel``, ``keras`` or ``tflite``.
        path: the artifact.
        entry: its manifest entry (``input_name``, ``output_name``).

    Raises:
        BackendUnavailableError: the runtime is not installed (with the pip hint).
        NotSupportedError: an unknown format.
    """
    if fmt not in RUNTIMES:
        raise NotSupportedError(f"unknown artifact format {fmt!r}; expected one of {', '.join(RUNTIMES)}")
    missing = runtime_missing(fmt)
    if missing:
        desc, _, extra = RUNTIMES[fmt]
        raise BackendUnavailableError(f"format {fmt!r} runs on {desc}, which needs {', '.join(missing)}: "
                                      f'pip install "unified-trainer[{extra}]"')
    return _LOADERS[fmt](Path(path), entry)


def _onnx(path: Path, entry: dict[str, Any]) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = entry.get("input_name") or session.get_inputs()[0].name
    out = entry.get("output_name") or session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out], {name: x})[0]

    return Runner("onnx", f"onnxruntime {ort.__version__}", run)  # InferenceSession.run is thread-safe


def _torchscript(path: Path, entry: dict[str, Any]) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).detach().cpu().numpy()

    return Runner("torchscript", f"torch.jit {torch.__version__}", run)


def _savedmodel(path: Path, entry: dict[str, Any]) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    (in_name,) = list(fn.structured_input_signature[1])
    out_name = entry.get("output_key") or sorted(fn.structured_outputs)[0]

    def run(x: np.ndarray) -> np.ndarray:
        return fn(**{in_name: tf.constant(x)})[out_name].numpy()

    return Runner("savedmodel", f"tensorflow {tf.__version__}", run, lock=None)


def _keras(path: Path, entry: dict[str, Any]) -> Runner:
    import keras

    model = keras.saving.load_model(str(path), compile=False)

    def run(x: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(x, training=False))

    return Runner("keras", f"keras {keras.__version__} ({keras.backend.backend()})", run, lock=threading.Lock())


def _tflite(path: Path, entry: dict[str, Any]) -> Runner:
    interpreter_cls, name = _tflite_interpreter()
    interp = interpreter_cls(model_path=str(path))
    inp = interp.get_input_details()[0]
    out_index = interp.get_output_details()[0]["index"]
    state = {"shape": None}

    def run(x: np.ndarray) -> np.ndarray:
        if state["shape"] != x.shape:  # TFLite tensors have a fixed size until resized
            interp.resize_tensor_input(inp["index"], list(x.shape), strict=False)
            interp.allocate_tensors()
            state["shape"] = x.shape
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out_index).copy()

    return Runner("tflite", name, run, lock=threading.Lock())


def _tflite_interpreter() -> tuple[Any, str]:
    if importlib.util.find_spec("ai_edge_litert") is not None:  # LiteRT, tf.lite's successor
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    import tensorflow as tf

    def make(model_path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter warns that LiteRT replaces it
            return tf.lite.Interpreter(model_path=model_path)

    return make, f"tf.lite.Interpreter (tensorflow {tf.__version__})"


_LOADERS: dict[str, Callable[[Path, dict[str, Any]], Runner]] = {
    "onnx": _onnx, "torchscript": _torchscript, "savedmodel": _savedmodel, "keras": _keras, "tflite": _tflite,
}
