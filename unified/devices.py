"""Which accelerator a run trains on: ``trainer.accelerator``, ``devices`` and ``precision`` against the GPUs
the backend's framework sees.

Framework-free. What differs per backend is only the *probe*, a method of the adapter class
(``BackendAdapter.gpu_probe``: torch asks ``torch.cuda.device_count()``, Keras on TensorFlow
``tf.config.list_physical_devices("GPU")``, Keras on JAX ``jax.devices("gpu")``); :func:`select` decides
from its answer, the same way for every backend:

* ``cpu``: the CPU (the probe is not asked); ``devices`` counts processes (torch backends) or logical CPU
  devices (Keras).
* ``gpu``: a GPU per device; none visible, or fewer than ``devices``: :class:`~unified.errors.SpecError`.
* ``auto``: ``gpu`` when the framework sees at least one GPU, else ``cpu``.
* ``16-mixed`` (float16 autocast with loss scaling) only on ``gpu``; on the CPU bf16-mixed is the mixed
  precision that works (and the one Lightning allows).

Several processes talk over NCCL on CUDA GPUs and over gloo on the CPU (:attr:`Placement.dist_backend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Optional

from unified.errors import SpecError

ACCELERATORS = ("auto", "cpu", "gpu")  # trainer.accelerator (the one list; the schema validates against it)


@dataclass(frozen=True)
class GpuProbe:
    """What one framework sees, said so that a user can check it.

    Attributes:
        count: GPUs visible to the framework.
        framework: who looked (``torch``, ``tensorflow``, ``jax``).
        check: the call that counted them (``torch.cuda.device_count()``).
        none_reason: why none, when ``count == 0`` (``torch.cuda.is_available() is False``).
    """

    count: int
    framework: str
    check: str
    none_reason: str = ""


@dataclass(frozen=True)
class Placement:
    """The selection for one run.

    Attributes:
        accelerator: ``cpu`` or ``gpu`` (``auto`` resolved).
        devices: processes (torch backends) or devices (Keras) per machine: GPUs on ``gpu``.
        requested: the spec's ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``).
        gpus_visible: what the probe counted; ``None`` when it was not asked (``accelerator: cpu``).
    """

    accelerator: str
    devices: int
    requested: str = "cpu"
    gpus_visible: Optional[int] = None

    @property
    def on_gpu(self) -> bool:
        return self.accelerator == "gpu"

    @property
    def dist_backend(self) -> str:
        """The collective library of several processes: ``nccl`` between CUDA GPUs, ``gloo`` on the CPU."""
        return "nccl" if self.on_gpu else "gloo"

    @property
    def device_type(self) -> str:
        """torch's device type (also what ``torch.autocast`` takes): ``cuda`` or ``cpu``."""
        return "cuda" if self.on_gpu else "cpu"

    def summary(self) -> dict[str, Any]:
        """The fields ``summary.json`` and ``unified backends`` show: ``{"accelerator", "devices"}``."""
        return {"accelerator": self.accelerator, "devices": self.devices}


CPU = Placement("cpu", 1)  # a single CPU process (the default placement of anything that did not select)

FP16_ON_CPU = ("float16 autocast with GradScaler loss scaling is a GPU feature; on the CPU it is slow and "
               "Lightning refuses it")


def _sees(probe: GpuProbe) -> str:
    if probe.count == 0:
        why = f" ({probe.none_reason})" if probe.none_reason else f" ({probe.check} == 0)"
        return f"{probe.framework} sees none{why}"
    return f"{probe.framework} sees {probe.count} ({probe.check})"


def select(accelerator: str, devices: int, precision: str, probe: Callable[[], GpuProbe]) -> Placement:
    """Decide the accelerator and device count of a run.

    Args:
        accelerator: ``trainer.accelerator``: ``auto``, ``cpu`` or ``gpu``.
        devices: ``trainer.devices`` (GPUs per machine on ``gpu``).
        precision: ``trainer.precision`` as resolved (``32``, ``bf16-mixed``, ``16-mixed``).
        probe: called (at most once, never for ``cpu``) to learn how many GPUs the backend's framework sees.

    Returns:
        The :class:`Placement`.

    Raises:
        SpecError: ``gpu`` with no GPU visible, more ``devices`` than visible GPUs, or ``16-mixed`` on the CPU;
            one line naming the field.
    """
    if accelerator not in ACCELERATORS:
        raise SpecError(f"expected one of {', '.join(ACCELERATORS)}, got {accelerator!r}", path="trainer.accelerator")
    seen: Optional[GpuProbe] = None
    if accelerator == "cpu":
        chosen = "cpu"
    else:
        seen = probe()
        if accelerator == "gpu" and seen.count == 0:
            raise SpecError(f"'gpu' needs a GPU, but {_sees(seen)}; use trainer.accelerator: cpu (or auto) to train "
                            f"on the CPU", path="trainer.accelerator")
        chosen = "gpu" if seen.count > 0 else "cpu"
        if chosen == "gpu" and devices > seen.count:
            how = "" if accelerator == "gpu" else " (trainer.accelerator: auto picks the GPUs when there are any)"
            raise SpecError(f"{devices} GPUs asked for{how}, but {_sees(seen)}; set trainer.devices <= {seen.count}, "
                            f"or trainer.accelerator: cpu for {devices} CPU processes", path="trainer.devices")
    if precision == "16-mixed" and chosen == "cpu":
        where = "trainer.accelerator: cpu" if seen is None else \
            f"trainer.accelerator: {accelerator}, and {_sees(seen)}"
        raise SpecError(f"'16-mixed' needs a GPU ({FP16_ON_CPU}), but this run is on the CPU: {where}; use "
                        f"trainer.precision: bf16-mixed on the CPU", path="trainer.precision")
    return Placement(chosen, int(devices), accelerator, None if seen is None else seen.count)


def select_for(spec: Any, probe: Callable[[], GpuProbe]) -> Placement:
    """:func:`select` with the values of ``spec.trainer``."""
    tr = spec.trainer
    return select(getattr(tr, "accelerator", "auto"), int(tr.devices), tr.precision, probe)


def no_gpu_probe(framework: str, why: str) -> GpuProbe:
    """The answer of a backend that never trains on a GPU (``why`` says so)."""
    return GpuProbe(0, framework, "no GPU support", why)


def describe(adapter_cls: Any, entry: Any) -> dict[str, Any]:
    """What ``unified backends`` shows of one installed backend's devices.

    Args:
        adapter_cls: the backend's adapter class (its ``gpu_probe`` and ``gpu_capable``).
        entry: its :class:`unified.registry.BackendEntry`; a backend with variants (Keras's tensor backends)
            is probed once per variant.

    Returns:
        ``{"accelerators": ["cpu", "gpu"], "devices": {"cpu": 1, "gpu": n}}``, with ``devices`` keyed by
        variant for a backend with variants; a count the probe could not make is ``None`` with ``error``,
        a zero count says why (``no_gpu``).
    """
    def one(stub: Any) -> dict[str, Any]:
        try:
            seen = adapter_cls.gpu_probe(stub)
        except Exception as e:  # noqa: BLE001 - a broken install shows as such; it does not end the listing
            lines = str(e).strip().splitlines()
            return {"cpu": 1, "gpu": None, "error": f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")}
        return {"cpu": 1, "gpu": seen.count, **({"no_gpu": seen.none_reason} if seen.count == 0 else {})}

    variant = entry.variant
    if variant is None:
        devices: dict[str, Any] = one(SimpleNamespace())
    else:
        devices = {v: one(SimpleNamespace(**{variant.field: v})) for v in variant.choices}
    return {"accelerators": ["cpu", "gpu"] if adapter_cls.gpu_capable() else ["cpu"], "devices": devices}


def devices_line(info: dict[str, Any]) -> str:
    """``cpu x1, gpu x0`` (per variant: ``tensorflow: cpu x1, gpu x0; jax: ...``) from :func:`describe`."""
    def fmt(d: dict[str, Any]) -> str:
        return f"cpu x{d['cpu']}, gpu x{'?' if d['gpu'] is None else d['gpu']}"

    devices = info["devices"]
    if "cpu" in devices:
        return fmt(devices)
    return "; ".join(f"{v}: {fmt(d)}" for v, d in devices.items())
