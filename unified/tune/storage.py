"""The study storage: database URLs (driver, redacted password) and the Optuna RDB storage with heartbeats."""

from __future__ import annotations

import time
from typing import Any, Optional

from unified.errors import BackendUnavailableError, SpecError
from unified.tune.optuna_lib import load_optuna
from unified.tune.text import one_line

POSTGRES_HINT = 'pip install "unified-trainer[postgres]"'
HEARTBEAT_S = 10  # a running trial's heartbeat interval
GRACE_S = 60  # a trial whose heartbeat is this much older is failed (its worker died)


def storage_url(url: str) -> str:
    """``url`` with the PostgreSQL driver made explicit when only psycopg2 is installed.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; the ``postgres`` extra installs psycopg2, so a
    plain ``postgresql://`` (or ``postgres://``) URL becomes ``postgresql+psycopg2://`` when psycopg 3 is absent.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def redact(url: str) -> str:
    """The storage URL with its password hidden (for printing and files)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy knows: show as is
        return url


def open_storage(url: str) -> Any:
    """An Optuna RDB storage for ``url`` (SQLite waits for locks; every backend gets heartbeats).

    Raises:
        BackendUnavailableError: the database driver is missing (with the install hint).
        SpecError: the storage cannot be opened.
    """
    optuna = load_optuna()
    url = storage_url(url)
    engine: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Optional[BaseException] = None
    for attempt in range(4):  # two workers creating the tables of a fresh database at once may collide
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
        except ImportError as e:  # the database driver
            cause = e.__cause__ or e
            hint = POSTGRES_HINT if url.startswith("postgres") else "install the database driver for this URL"
            raise BackendUnavailableError(f"--storage {redact(url)}: {one_line(cause)} ({hint})") from None
        except Exception as e:  # noqa: BLE001 - any driver error: a clear line, exit 2
            last = e
            if type(e).__name__ in ("ArgumentError", "NoSuchModuleError", "ValueError"):
                break
            time.sleep(0.5 + attempt)
    raise SpecError(f"--storage {redact(url)}: cannot open the study storage: {one_line(last)}")
