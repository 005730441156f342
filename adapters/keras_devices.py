"""Keras placement per tensor backend: the GPUs its framework sees, and hiding them for ``accelerator: cpu``.

Keras places work on a GPU whenever its framework sees one, so ``trainer.accelerator: cpu`` on a GPU machine
must hide the GPUs *before* the framework starts its devices:

* TensorFlow: ``tf.config.set_visible_devices([], "GPU")`` (before its runtime starts);
* PyTorch: ``KERAS_TORCH_DEVICE=cpu`` (read when Keras's torch backend is imported);
* JAX: ``JAX_PLATFORMS=cpu`` / ``jax_platforms`` (before its backends start).

The probes avoid starting a framework that has no GPU support installed (JAX: no CUDA/ROCm plugin), so
counting GPUs never fixes JAX's device set before ``adapters/keras_replicas.py`` has made its CPU devices.
Nothing here has run on a machine with a GPU; the tests cover it on the CPU (docs/scaling.md, Accelerators).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from typing import Callable

from unified.devices import GpuProbe, Placement

# JAX finds GPUs through a plugin package (jax[cuda12] installs jax_cuda12_plugin) or the jax_plugins namespace.
_JAX_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "jax_plugins")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _probe_tensorflow() -> GpuProbe:
    check = 'tf.config.list_physical_devices("GPU")'
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    n = len(tf.config.list_physical_devices("GPU"))  # physical devices only: the runtime is not started
    why = "tensorflow is not built with CUDA (tensorflow-cpu)" if not tf.test.is_built_with_cuda() else f"{check} is empty"
    return GpuProbe(n, "tensorflow", check, why)


def _probe_torch() -> GpuProbe:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return GpuProbe(n, "torch", "torch.cuda.device_count()", "torch.cuda.is_available() is False")


def _probe_jax() -> GpuProbe:
    check = 'jax.devices("gpu")'
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return GpuProbe(0, "jax", check, "JAX_PLATFORMS=cpu")
    if not any(importlib.util.find_spec(m) is not None for m in _JAX_GPU_PLUGINS):
        return GpuProbe(0, "jax", check, 'no JAX GPU plugin is installed (pip install "jax[cuda12]")')
    import jax

    try:
        n = len(jax.devices("gpu"))
    except RuntimeError as e:  # no GPU backend: jax raises instead of returning []
        return GpuProbe(0, "jax", check, f"{check} raised {_first_line(e)}")
    return GpuProbe(n, "jax", check, f"{check} is empty")


_PROBES: dict[str, Callable[[], GpuProbe]] = {"tensorflow": _probe_tensorflow, "torch": _probe_torch,
                                              "jax": _probe_jax}


def probe(tensor_backend: str) -> GpuProbe:
    """The GPUs Keras's ``tensor_backend`` (``tensorflow``, ``torch``, ``jax``) sees.

    Args:
        tensor_backend: the resolved ``keras_backend``.

    Returns:
        A :class:`~unified.devices.GpuProbe`; an unknown or missing framework counts none.
    """
    fn = _PROBES.get(tensor_backend)
    if fn is None:
        return GpuProbe(0, f"keras on {tensor_backend}", "no GPU probe", f"unknown Keras backend {tensor_backend!r}")
    if importlib.util.find_spec(tensor_backend) is None:
        return GpuProbe(0, tensor_backend, "no GPU probe", f"{tensor_backend} is not installed")
    return fn()


def _hide_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as e:  # the runtime started already (something used TensorFlow before this run)
        warnings.warn(f"trainer.accelerator: cpu: TensorFlow's GPUs could not be hidden ({_first_line(e)}); "
                      f"Keras may place work on them", RuntimeWarning, stacklevel=3)


def _hide_torch() -> None:
    if "keras" in sys.modules and os.environ.get("KERAS_TORCH_DEVICE") != "cpu":
        warnings.warn("trainer.accelerator: cpu: Keras is imported already, so its torch device is fixed "
                      "(set KERAS_TORCH_DEVICE=cpu before importing keras)", RuntimeWarning, stacklevel=3)
    os.environ["KERAS_TORCH_DEVICE"] = "cpu"


def _hide_jax() -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")  # no effect once JAX's backends started


_HIDERS: dict[str, Callable[[], None]] = {"tensorflow": _hide_tensorflow, "torch": _hide_torch, "jax": _hide_jax}


def place(tensor_backend: str, placement: Placement) -> None:
    """Before Keras imports its framework: on ``cpu``, hide the GPUs from ``tensor_backend``; on ``gpu``,
    nothing (Keras and its framework use the visible GPUs themselves).

    Args:
        tensor_backend: the resolved ``keras_backend``.
        placement: the run's :class:`~unified.devices.Placement` (``BackendAdapter.select_placement``).
    """
    if placement.on_gpu or tensor_backend not in _HIDERS or importlib.util.find_spec(tensor_backend) is None:
        return
    _HIDERS[tensor_backend]()

