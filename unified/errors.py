"""Error classes. Each subclasses the built-in a user would expect to catch."""

from __future__ import annotations


class UnifiedError(Exception):
    """Base class of every error this library raises on purpose."""


class SpecError(UnifiedError, ValueError):
    """The experiment spec (or an argument standing for part of it) is invalid.

    The message names the source file (when there is one), the field path and what was expected,
    e.g. ``examples/x.yaml: optimizer.lr: must be > 0, got -0.5``.
    """

    def __init__(self, message: str, *, path: str | None = None, source: str | None = None):
        self.path = path
        self.source = source
        self.detail = message
        text = message
        if path:
            text = f"{path}: {text}"
        if source:
            text = f"{source}: {text}"
        super().__init__(text)

    def with_source(self, source: str) -> "SpecError":
        """Return the same error naming ``source`` (the spec file) in front."""
        if self.source:
            return self
        return SpecError(self.detail, path=self.path, source=source)


class DataError(SpecError):
    """The data named by the spec cannot be read or does not fit the task."""


class BackendUnavailableError(UnifiedError, ImportError):
    """The backend is known but its framework is not installed. The message carries the pip hint."""


class NotSupportedError(UnifiedError, NotImplementedError):
    """The backend (or this version) cannot do what the spec asks; raised before training starts."""


class TrainingError(UnifiedError, RuntimeError):
    """Training itself failed (exit code 1); the run directory is left consistent."""


class Interrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM; a checkpoint was saved first when possible.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C handles it. ``signum`` is the signal;
    the ``unified`` command exits with ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str = "", checkpoint: "str | None" = None) -> None:
        super().__init__(message or f"interrupted by signal {signum}")
        self.signum = signum
        self.checkpoint = checkpoint


class VerificationError(UnifiedError, RuntimeError):
    """An exported artifact does not reproduce the trained model within the tolerance (exit code 1)."""
