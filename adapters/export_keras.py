"""Export for the Keras backend: ONNX, SavedModel, ``.keras``, TFLite (TensorFlow), TorchScript (torch),
``.keras`` and SavedModel (JAX, the latter when TensorFlow is installed).

The exported model is a functional ``keras.Model``: ``Input("inputs") -> Rescaling(offset=-mean) ->
Rescaling(scale=1/std) -> <the trained network>``. Built-in layers only, so the ``.keras`` file loads
without this package; ``x - mean`` first, then the scale, keeps the rounding of ``(x - mean) / std``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from unified.errors import NotSupportedError
from unified.export.manifest import INPUT_NAME, OUTPUT_NAME
from unified.export.quiet import quiet_loggers

FILES = {"onnx": "model.onnx", "savedmodel": "savedmodel", "keras": "model.keras", "tflite": "model.tflite",
         "torchscript": "model.pt"}

# keras tensor backend -> formats the Keras exporter gives there
FORMATS_BY_BACKEND = {
    "tensorflow": frozenset({"onnx", "savedmodel", "keras", "tflite"}),
    "torch": frozenset({"onnx", "keras", "torchscript"}),
    "jax": frozenset({"keras", "savedmodel"}),
}
# Keras on JAX: `.keras` always. SavedModel only where TensorFlow is installed: Keras exports a JAX model
# through jax2tf (part of jax) into a tf.function (tested: the reloaded SavedModel gives the same outputs),
# so it is offered only then (formats_for). Not offered: ONNX (Keras 3 converts JAX models with the
# separate jax2onnx package, which brings flax, orbax and tensorstore; tf2onnx reads TensorFlow graphs
# only), TFLite (its converter is TensorFlow's and untested from jax2tf here), TorchScript (torch).
NEEDS_TENSORFLOW = {("jax", "savedmodel")}


def formats_for(keras_backend: str) -> frozenset[str]:
    """The formats Keras on ``keras_backend`` gives on this machine."""
    import importlib.util

    gives = FORMATS_BY_BACKEND.get(keras_backend, frozenset())
    if any((keras_backend, f) in NEEDS_TENSORFLOW for f in gives) and importlib.util.find_spec("tensorflow") is None:
        gives = frozenset(f for f in gives if (keras_backend, f) not in NEEDS_TENSORFLOW)
    return gives


def requires(fmt: str, spec: Any) -> tuple[str, ...]:
    """Modules the exporter needs for ``fmt`` on the spec's Keras backend."""
    if fmt == "onnx":
        return ("onnx", "tf2onnx") if spec.keras_backend == "tensorflow" else ("onnx",)
    from unified.registry import resolve_keras_backend

    if (resolve_keras_backend(spec.keras_backend), fmt) in NEEDS_TENSORFLOW:
        return ("tensorflow",)
    return ()


def quiet() -> Any:
    """Silence the exporters' progress prints, deprecation warnings and optional-op log lines."""
    return quiet_loggers("tensorflow", "absl", "tf2onnx", "torch.onnx", "torch.onnx._internal.exporter._registration")


def serving_model(keras: Any, net: Any, pre: Any) -> Any:
    """A functional model taking raw features: the standardization layers, then ``net``."""
    x = inputs = keras.Input(tuple(int(d) for d in pre.sample_shape), name=INPUT_NAME, dtype=pre.input_dtype)
    if pre.standardize and pre.input_dtype != "int64":
        # (x - mean) / std; mean/std broadcast over one sample: [F] per feature, [C, 1, 1] per channel
        mean = np.asarray(pre.mean, dtype=np.float64)
        std = np.asarray(pre.std, dtype=np.float64)
        x = keras.layers.Rescaling(scale=1.0, offset=(-mean).tolist(), name="center")(x)
        x = keras.layers.Rescaling(scale=(1.0 / std).tolist(), offset=0.0, name="scale")(x)
    return keras.Model(inputs, net(x), name="exported")


def export(adapter: Any, fmt: str, out_dir: Path, pre: Any, example: np.ndarray) -> dict[str, Any]:
    """Export the Keras adapter's trained network as ``fmt`` into ``out_dir`` (the manifest entry fields)."""
    keras, kb = adapter.keras, adapter.kb
    if fmt not in formats_for(kb):
        raise NotSupportedError(f"format {fmt!r} is not available from Keras on {kb}")
    net, unrolled = adapter.float32_model(), False  # float32 compute of the trained weights (mixed precision too)
    if fmt == "tflite":
        net, unrolled = _tflite_net(keras, net, pre)
    model = serving_model(keras, net, pre)
    model(np.ascontiguousarray(example, dtype=np.float32), training=False)  # Keras exports only called models
    path = out_dir / FILES[fmt]
    entry: dict[str, Any] = {"path": path.name, "files": [path.name], "input_name": INPUT_NAME,
                             "output_name": OUTPUT_NAME}
    with quiet():
        if fmt == "keras":
            model.save(str(path))
            entry["exporter"] = f"keras.Model.save (keras {keras.__version__})"
        elif fmt == "onnx":
            entry["exporter"] = _onnx(model, example, path, keras, kb)
        elif fmt == "savedmodel":
            model.export(str(path), format="tf_saved_model", verbose=False)
            entry["files"] = sorted(str(p.relative_to(out_dir)) for p in path.rglob("*") if p.is_file())
            entry["signature"] = "serving_default"
            entry["exporter"] = f"keras.Model.export(format='tf_saved_model') (keras {keras.__version__})"
        elif fmt == "tflite":
            entry["exporter"] = _tflite(model, path, keras) + ("; recurrent layers unrolled" if unrolled else "")
        elif fmt == "torchscript":
            import torch

            traced = torch.jit.trace(model, (torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),),
                                     check_trace=False)
            traced.save(str(path))
            entry["exporter"] = f"torch.jit.trace of the Keras model (keras {keras.__version__} on torch)"
    return entry


def float32_predict(adapter: Any, x: np.ndarray) -> np.ndarray:
    """The outputs of the network :func:`export` writes (float32 compute of the trained weights) on model inputs
    ``x`` (standardized): the reference its artifacts are verified against when the run trained in mixed precision.
    """
    keras = adapter.keras
    adapter.sync_state()
    net = adapter.float32_model()
    outs = []
    for i in range(0, len(x), 1024):
        xb = np.ascontiguousarray(x[i:i + 1024], dtype=np.int64 if np.asarray(x).dtype == np.int64 else np.float32)
        outs.append(np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(net(xb, training=False), "float32"))))
    return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)


def _tflite_net(keras: Any, net: Any, pre: Any) -> tuple[Any, bool]:
    """The network to convert to TFLite, and whether its time loops were unrolled.

    TFLite's built-in ops cannot run the while loop of a recurrent layer over a dynamic batch (the converter
    falls back to TensorFlow "Flex" ops, which the TFLite interpreter lacks). So a network with recurrent
    layers (Keras's LSTM / GRU / SimpleRNN, alone or in Bidirectional, and the built-in archs' ``TorchRNN``)
    is cloned with ``unroll=True`` on each of them, on an input of the run's fixed sample shape (the time
    axis may be undefined in the user's model), and given the trained weights: the same function of the same
    weights, as T copies of the cell instead of a loop. A network Keras cannot clone (a subclassed model) is
    converted as it is.
    """
    config = _config_or_none(net)
    if config is None or _unrolled(config) == config:
        return net, False  # nothing recurrent (or unrolled already), or not clonable
    inputs = keras.Input(tuple(int(d) for d in pre.sample_shape), dtype=net.inputs[0].dtype)

    def clone(layer: Any) -> Any:
        return layer.__class__.from_config(_unrolled(layer.get_config()))

    try:
        copy = keras.models.clone_model(net, input_tensors=inputs, clone_function=clone)
        copy.set_weights(net.get_weights())
    except (ValueError, TypeError, NotImplementedError, AttributeError):
        return net, False
    return copy, True


def _config_or_none(net: Any) -> Any:
    try:
        return net.get_config() if getattr(net, "inputs", None) else None
    except NotImplementedError:  # a subclassed model without get_config
        return None


def _unrolled(config: Any) -> Any:
    """``config`` with every ``"unroll"`` option (at any depth: Bidirectional, nested models) set to True."""
    if isinstance(config, dict):
        return {k: (True if k == "unroll" else _unrolled(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_unrolled(v) for v in config]
    return config


def _tflite(model: Any, path: Path, keras: Any) -> str:
    try:
        model.export(str(path), format="litert", verbose=False)
        return f"keras.Model.export(format='litert') (keras {keras.__version__})"
    except ValueError:  # an older Keras without the litert format: TensorFlow's converter
        import tensorflow as tf

        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with open(path, "wb") as f:
            f.write(data)
        return f"tf.lite.TFLiteConverter (tensorflow {tf.__version__})"


def _onnx(model: Any, example: np.ndarray, path: Path, keras: Any, kb: str) -> str:
    """``keras.Model.export(format="onnx")``; on the torch backend, torch.export if that fails.

    On torch, Keras exports with a dynamic batch axis through torch's TorchScript-based exporter only, which
    cannot export Keras's LayerNormalization there (its ``normalized_shape`` is read from the traced input
    shape: "Failed to export a node ... because it is not constant"), so a transformer failed. The Keras model
    is a ``torch.nn.Module`` there: torch.export (``dynamo=True``, a dynamic batch dimension) captures it, as
    for Lightning / Ignite. Keras's exporter stays first: torch.export specializes the batch axis of Keras's
    recurrent layers on torch (their Python loop reads the batch size).
    """
    try:
        model.export(str(path), format="onnx", verbose=False)
        _rename_onnx_output(path, OUTPUT_NAME)
        return f"keras.Model.export(format='onnx') (keras {keras.__version__} on {kb})"
    except Exception as e:  # noqa: BLE001 - whatever the exporter raises, torch.export is tried next
        if kb != "torch":
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if path.exists():
            path.unlink()
    return f"{_onnx_on_torch(model, example, path)} of the Keras model (keras {keras.__version__} on torch; " \
           f"keras.Model.export failed: {reason})"


def _onnx_on_torch(model: Any, example: np.ndarray, path: Path) -> str:
    """ONNX of a Keras model on the torch backend (a ``torch.nn.Module``) through the torch trainers' exporter."""
    import torch

    from unified.adapters.export_torch import onnx_export

    class Forward(torch.nn.Module):  # forward(inputs): Keras's own forward(*args) hides the input from torch.export
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs: Any) -> Any:
            return self.net(inputs)

    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.int64 if example.dtype == np.int64 else np.float32))
    with torch.no_grad():
        return onnx_export(Forward(model), x, path)


def _rename_onnx_output(path: Path, name: str) -> None:
    """Keras's ONNX exporters name the output after an internal tensor; call it ``outputs`` like the others."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if len(graph.output) != 1 or graph.output[0].name == name:
        return
    old = graph.output[0].name
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == old:
                node.output[i] = name
        for i, inp in enumerate(node.input):
            if inp == old:
                node.input[i] = name
    graph.output[0].name = name
    tmp = str(path) + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)
