"""Backend registry: name -> ``"unified.adapters.<module>:<Class>"`` plus an install hint.

Third-party backends register through the ``unified.backends`` entry-point group with a value
``"pkg.module:AdapterClass"``. Nothing here imports a framework; ``load_adapter`` imports the
adapter module, which imports its framework lazily.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

from unified.errors import BackendUnavailableError, SpecError


KERAS_TENSOR_BACKENDS = ("tensorflow", "torch", "jax")  # Keras 3's tensor backends (spec.keras_backend)


@dataclass(frozen=True)
class Variant:
    """A choice inside one backend that needs a process of its own (Keras picks its tensor backend once per
    process): the spec field that holds it, its values, and the ``<backend>-<value>`` names ``unified
    compare --backends`` accepts for it."""

    field: str
    choices: tuple[str, ...]
    resolve: Any  # (requested value or None) -> the value this process will use (imports nothing)
    cli_flag: str  # the `unified run` option that sets it
    requires: Any = None  # value -> top-level modules it needs; None: the value names its module (tensorflow, jax)

    def value(self, spec: Any) -> Optional[str]:
        return getattr(spec, self.field, None)

    def missing_modules(self, value: str) -> tuple[str, ...]:
        """The modules ``value`` needs that are not importable here (``()``: it can run); imports nothing."""
        modules = self.requires(value) if self.requires is not None else (value,)
        return tuple(m for m in modules if importlib.util.find_spec(m) is None)

    def is_installed(self, value: str) -> bool:
        return not self.missing_modules(value)

    def installed_choices(self) -> tuple[str, ...]:
        """The choices that can run here, in ``choices`` order."""
        return tuple(v for v in self.choices if self.is_installed(v))


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend."""

    name: str
    target: str  # "module:Class"
    requires: tuple[str, ...]  # top-level modules that must be importable
    extra: str  # the pip extra that installs it
    variant: Optional[Variant] = None

    def resolved_updates(self, spec: Any) -> dict[str, Any]:
        """Spec fields this backend resolves when a run starts (its variant), ``{}`` without one."""
        if self.variant is None:
            return {}
        return {self.variant.field: self.variant.resolve(self.variant.value(spec))}

    def variant_value(self, spec: Any) -> Optional[str]:
        """The variant a spec resolved for this backend (``None`` for a backend without variants)."""
        return self.variant.value(spec) if self.variant is not None else None

    @property
    def install_hint(self) -> str:
        return f'pip install "unified-trainer[{self.extra}]"'

    def is_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


def resolve_keras_backend(requested: "str | None") -> str:
    """The Keras tensor backend a run uses: the spec's, else the one Keras already loaded in this
    process, else ``KERAS_BACKEND``, else ``tensorflow`` (Keras's own default). Imports nothing."""
    import os
    import sys

    if requested:
        return requested
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


BUILTIN_BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry("torch", "unified.adapters.torch:TorchLoopAdapter", ("torch",), "torch"),
    "ignite": BackendEntry("ignite", "unified.adapters.ignite:IgniteAdapter", ("torch", "ignite"), "ignite"),
    "lightning": BackendEntry(
        "lightning", "unified.adapters.lightning:LightningAdapter", ("torch", "pytorch_lightning"), "lightning"
    ),
    # Keras's tensor backend is checked when a run starts (spec.keras_backend).
    "keras": BackendEntry("keras", "unified.adapters.keras:KerasAdapter", ("keras",), "keras",
                          Variant("keras_backend", KERAS_TENSOR_BACKENDS, resolve_keras_backend, "--keras-backend")),
}

# Order used when the spec names no backend: the first installed one wins.
DEFAULT_ORDER = ("ignite", "lightning", "keras", "torch")


def _entry_point_backends() -> dict[str, BackendEntry]:
    found: dict[str, BackendEntry] = {}
    try:
        eps = importlib.metadata.entry_points(group="unified.backends")
    except Exception:  # pragma: no cover - broken metadata should not break the registry
        return found
    for ep in eps:
        module = ep.value.split(":", 1)[0]
        found[ep.name] = BackendEntry(ep.name, ep.value, (module.split(".")[0],), ep.name)
    return found


def available_backends() -> dict[str, BackendEntry]:
    """Every registered backend, installed or not, built-ins first."""
    entries = dict(BUILTIN_BACKENDS)
    for name, entry in _entry_point_backends().items():
        entries.setdefault(name, entry)
    return entries


def installed_backends() -> list[str]:
    """Names of the registered backends whose framework is importable here."""
    return [name for name, entry in available_backends().items() if entry.is_installed()]


def get_entry(name: str) -> BackendEntry:
    """Look a backend up by name; an unknown name lists the available ones."""
    entries = available_backends()
    if name not in entries:
        from unified.spec import _choice_msg

        raise SpecError(_choice_msg(name, sorted(entries), "unknown backend"), path="backend")
    return entries[name]


def default_backend() -> str:
    """The first installed backend of ``DEFAULT_ORDER`` (then any other installed one)."""
    installed = installed_backends()
    for name in DEFAULT_ORDER:
        if name in installed:
            return name
    if installed:
        return installed[0]
    hints = "; ".join(f"{e.name}: {e.install_hint}" for e in available_backends().values())
    raise BackendUnavailableError(f"no training backend is installed ({hints})")


def load_adapter(name: str) -> type:
    """Import and return the adapter class of backend ``name``."""
    entry = get_entry(name)
    if not entry.is_installed():
        missing = [m for m in entry.requires if importlib.util.find_spec(m) is None]
        raise BackendUnavailableError(
            f"backend {name!r} needs {', '.join(missing)}, which is not installed: {entry.install_hint}"
        )
    module_name, _, attr = entry.target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)

