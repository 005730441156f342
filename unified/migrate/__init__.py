"""``unified migrate``: move Lightning, Ignite and Keras training code onto :class:`UnifiedTrainer`.

Built on LibCST, which is imported only when a migration runs (``pip install "unified-trainer[migrate]"``);
importing this package imports neither LibCST nor any framework. See docs/migration.md.

Example:
    >>> from unified.migrate import migrate
    >>> result = migrate("train.py")            # dry run
    >>> print(result.to_text()); result.exit_code()
"""

from __future__ import annotations

import os
from typing import Any

from unified.migrate.report import EXIT_CHANGED, EXIT_MANUAL, EXIT_NOTHING, EXIT_USAGE, Finding, MigrationResult


def _engine() -> Any:
    try:
        from unified.migrate import engine
    except ImportError as e:
        from unified.errors import BackendUnavailableError

        raise BackendUnavailableError(f'unified migrate needs LibCST: pip install "unified-trainer[migrate]" ({e})') from e
    return engine


def migrate(path: str | os.PathLike[str], *, write: bool = False) -> MigrationResult:
    """Migrate a file or a directory tree (dry run unless ``write``); see :func:`engine.migrate_path`."""
    return _engine().migrate_path(path, write=write)


def migrate_text(text: str, path: str = "<string>") -> Any:
    """Migrate source text; returns a :class:`~unified.migrate.report.FileResult` (``new_text``, ``findings``)."""
    return _engine().migrate_source(text, path)


__all__ = ["migrate", "migrate_text", "Finding", "MigrationResult", "EXIT_NOTHING", "EXIT_CHANGED", "EXIT_MANUAL",
           "EXIT_USAGE"]
