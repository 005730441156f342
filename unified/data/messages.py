"""The wording shared by the readers and the encoders: every DataError message is one line."""

from __future__ import annotations

from typing import Any, Optional, Sequence


def one_line(error: BaseException) -> str:
    """``error``'s text on one line (its class name when it has no text)."""
    return " ".join(str(error).split()) or type(error).__name__


def short_list(values: Optional[Sequence[Any]], limit: int = 10) -> str:
    """``[a, b, ...]`` with at most ``limit`` reprs, then how many there are in all."""
    values = list(values or [])
    text = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        text += f", ... ({len(values)} in all)"
    return f"[{text}]"
