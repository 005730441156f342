"""Optuna, imported on first use (``pip install "unified-trainer[tune]"``), with its chatter turned down."""

from __future__ import annotations

import warnings
from typing import Any

from unified.errors import BackendUnavailableError

INSTALL_HINT = 'pip install "unified-trainer[tune]"'


def load_optuna() -> Any:
    """The ``optuna`` module, its logging at WARNING and its ExperimentalWarning silenced.

    Raises:
        BackendUnavailableError: Optuna is not installed (the message gives the install command).
    """
    try:
        import optuna
    except ImportError:
        raise BackendUnavailableError(f"unified tune needs Optuna: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna
