"""Rendering the extracted settings as code a person would write: the spec dict and its YAML form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_WIDTH = 100


@dataclass(frozen=True)
class Code:
    """A value that stays an expression of the user's script (``args.epochs``) instead of a literal."""

    text: str


def literal(value: Any) -> str:
    if isinstance(value, Code):
        return value.text
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return repr(value)


def render_dict(spec: dict[str, Any], indent: str) -> str:
    """``spec`` as a dict display: one top-level key per line, nested values inline when they fit.

    Args:
        spec: the settings (values are literals or :class:`Code`).
        indent: the indentation of the line the display starts on (continuation lines are indented
            one level deeper than it).
    """
    inner = indent + "    "
    lines = ["{"]
    for key, value in spec.items():
        one = f"{inner}{literal(key)}: {literal(value)},"
        if len(one) <= _WIDTH or not isinstance(value, (list, dict)) or not value:
            lines.append(one)
            continue
        opener, closer = ("[", "]") if isinstance(value, list) else ("{", "}")
        lines.append(f"{inner}{literal(key)}: {opener}")
        items = value if isinstance(value, list) else [f"{literal(k)}: {literal(v)}" for k, v in value.items()]
        for item in items:
            lines.append(f"{inner}    {item if isinstance(value, dict) else literal(item)},")
        lines.append(f"{inner}{closer},")
    lines.append(indent + "}")
    return "\n".join(lines)


def trainer_call(spec: dict[str, Any], backend: str, indent: str, name: str = "UnifiedTrainer") -> str:
    """``UnifiedTrainer({...}, backend="...")`` with the spec dict laid out by :func:`render_dict`."""
    return f'{name}({render_dict(spec, indent)}, backend="{backend}")'


def yaml_ready(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``spec`` without the values that are script expressions (returned as dotted keys)."""
    dropped: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, Code):
                    dropped.append(f"{path}{k}")
                    continue
                out[k] = walk(v, f"{path}{k}.")
            return out
        if isinstance(value, list):
            return [walk(v, f"{path}{i}.") for i, v in enumerate(value) if not isinstance(v, Code)]
        return value

    return walk(spec, ""), dropped
