"""Export for the torch trainers (Lightning, Ignite): ONNX and TorchScript, standardization in the graph."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from unified.errors import NotSupportedError
from unified.export.manifest import INPUT_NAME, OUTPUT_NAME
from unified.export.quiet import quiet_loggers

FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}


class Standardized(nn.Module):
    """``net((inputs - mean) / std)``: the exported module takes raw features."""

    def __init__(self, net: nn.Module, mean: Optional[np.ndarray], std: Optional[np.ndarray]) -> None:
        super().__init__()
        self.net = net
        self.standardize = mean is not None and std is not None
        if self.standardize:
            self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float32).copy()))
            self.register_buffer("std", torch.from_numpy(np.asarray(std, dtype=np.float32).copy()))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            inputs = (inputs - self.mean) / self.std
        return self.net(inputs)


def requires(fmt: str, spec: Any) -> tuple[str, ...]:
    """Modules the exporter needs for ``fmt`` (checked before anything runs)."""
    return ("onnx", "onnxscript") if fmt == "onnx" else ()


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def quiet() -> Any:
    """Silence the exporters' progress prints, deprecation warnings and optional-op log lines."""
    return quiet_loggers("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._dynamo",
             "onnxscript")


def export_module(net: nn.Module, fmt: str, out_dir: Path, pre: Any, example: np.ndarray) -> dict[str, Any]:
    """Write ``net`` with ``pre``'s standardization in front as ``fmt`` into ``out_dir``.

    Returns:
        The manifest entry fields: ``path``, ``files``, ``input_name``, ``output_name``, ``exporter``.
    """
    if fmt not in FILES:
        raise NotSupportedError(f"the torch exporter writes {', '.join(FILES)}, not {fmt!r}")
    wrapped = Standardized(net, pre.mean, pre.std)
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.int64 if pre.input_dtype == "int64" else np.float32))
    path = out_dir / FILES[fmt]
    with _eval(net), torch.no_grad():
        wrapped.eval()
        if fmt == "onnx":
            how = onnx_export(wrapped, x, path)
        else:
            with quiet():
                traced = torch.jit.trace(wrapped, (x,), check_trace=False)
                traced.save(str(path))
            how = f"torch.jit.trace (torch {torch.__version__})"
    return {"path": path.name, "files": [path.name], "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "exporter": how}


def onnx_export(model: nn.Module, x: torch.Tensor, path: Path) -> str:
    """torch.export-based ONNX (dynamo=True, needs onnxscript); the TorchScript-based exporter if that fails."""
    try:
        with quiet():
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, verbose=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        return f"torch.onnx.export(dynamo=True) (torch {torch.__version__})"
    except Exception as e:  # noqa: BLE001 - a module torch.export cannot capture: try the older exporter
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if path.exists():
            path.unlink()
    with quiet():
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return f"torch.onnx.export(dynamo=False) (torch {torch.__version__}; dynamo failed: {reason})"


def float32_predict(adapter: Any, x: np.ndarray) -> np.ndarray:
    """The outputs of the module :func:`export` writes on model inputs ``x`` (standardized): the trained float32
    weights computing in float32, outside the training's autocast (the reference the artifacts of a
    ``bf16-mixed`` / ``16-mixed`` run are verified against; the exporters trace outside autocast too)."""
    from unified.adapters.torch_common import predict

    net = adapter.native_model()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    return predict(net, x, device=device)


def export(adapter: Any, fmt: str, out_dir: Path, pre: Any, example: np.ndarray) -> dict[str, Any]:
    """The adapter-facing entry point: export the adapter's trained ``torch.nn.Module`` (on the CPU, where the
    example and the standardization live; a model trained on a GPU goes back there afterwards)."""
    net = adapter.native_model()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    if device.type == "cpu":
        return export_module(net, fmt, out_dir, pre, example)
    try:
        return export_module(net.cpu(), fmt, out_dir, pre, example)
    finally:
        net.to(device)
