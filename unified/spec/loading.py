"""Loading a spec: YAML / TOML / dict sources, the strict YAML loader, and ``--set`` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import ValidationError

from unified.errors import SpecError
from unified.spec.messages import _to_spec_error
from unified.spec.schema import Spec


def load_spec(
    source: Union[str, os.PathLike[str], dict[str, Any], Spec],
    overrides: Optional[Union[dict[str, Any], list[str]]] = None,
) -> Spec:
    """Load a spec from a YAML/TOML file, a dict or a Spec, applying dotted-key overrides.

    Args:
        source: path to ``.yaml``/``.yml``/``.toml``, a dict, or a ``Spec``.
        overrides: ``{"trainer.max_epochs": 5}`` or ``["trainer.max_epochs=5"]`` (values parsed as YAML).

    Raises:
        SpecError: naming the file, the field path and what was expected.
    """
    name: Optional[str] = None
    if isinstance(source, Spec):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = source
    else:
        name = str(source)
        data = read_spec_file(Path(source))
    pairs = parse_overrides(overrides, source=name)
    if pairs:
        data = apply_overrides(data, pairs, source=name)
    return _validate(data, name)


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse a YAML or TOML spec file into a dict (SpecError on any problem)."""
    src = str(path)
    if not path.exists():
        raise SpecError("spec file not found", source=src)
    if path.is_dir():
        raise SpecError("expected a spec file, got a directory", source=src)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"not UTF-8 text ({e.reason} at byte {e.start})", source=src) from None
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", source=src) from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"invalid TOML: {e}", source=src) from None
    else:
        data = _parse_yaml(text, src)
    return data


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: Optional[str]) -> dict[str, Any]:
    if not text.strip():
        raise SpecError("the file is empty; expected a mapping with at least 'data: {source: ...}'", source=source)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"invalid YAML{where}: {problem}", source=source) from None
    if data is None:
        raise SpecError("the file holds no settings; expected a mapping with at least 'data: {source: ...}'",
                        source=source)
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top level, got {type(data).__name__}", source=source)
    return data


def parse_overrides(overrides: Optional[Union[dict[str, Any], list[str]]], *, source: Optional[str] = None
                    ) -> list[tuple[str, Any]]:
    """Turn ``["a.b=1", ...]`` or ``{"a.b": 1}`` into ``[("a.b", 1), ...]`` (values parsed as YAML)."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    pairs = []
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        pairs.append((key, value))
    return pairs


def apply_overrides(data: dict[str, Any], pairs: list[tuple[str, Any]], *, source: Optional[str] = None
                    ) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each dotted key set (list items by index: ``callbacks.0.x``)."""
    import copy

    out = copy.deepcopy(data)
    for key, value in pairs:
        parts = key.split(".")
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(f"--set {key}: expected an index below {len(node)}, got {part!r}", path=where,
                                    source=source)
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise SpecError(f"--set {key}: {'.'.join(parts[:depth])} is not a mapping", source=source)
    return out


def _validate(data: Any, source: Optional[str]) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top level, got {type(data).__name__}", source=source)
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise _to_spec_error(e, source) from None
    except SpecError as e:
        raise e.with_source(source) if source else e
