"""How ``unified tune`` words values and errors in its lines, files and trial attributes."""

from __future__ import annotations

from typing import Any, Optional


def fmt(value: Any) -> str:
    """A float to 6 significant digits, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def one_line(error: Optional[BaseException]) -> str:
    """``"<ErrorClass>: <first line of its message>"`` ("" for None)."""
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
