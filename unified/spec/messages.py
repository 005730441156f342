"""Pydantic's validation errors turned into one readable line: the file, the field path, what was expected."""

from __future__ import annotations

import difflib
import re
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from unified.errors import SpecError


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "MetricSpec", "function-after[_check_one]") or str(part).startswith(("function-", "tuple[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(loc: tuple[Any, ...], root: Any = None) -> list[str]:
    """Field names of the model at ``loc`` (for did-you-mean suggestions)."""
    from unified.spec.schema import CALLBACK_KINDS, CallbackSpec, Spec

    model: Any = root or Spec
    for part in loc:
        if isinstance(part, int):
            continue
        if model is CallbackSpec and part in CALLBACK_KINDS:
            model = CALLBACK_KINDS[part]
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            break
        model = _model_of(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _to_spec_error(err: ValidationError, source: Optional[str], root: Any = None) -> SpecError:
    from unified.spec.schema import Spec

    errors = err.errors(include_url=False)
    # A union (``str | MetricSpec``) reports one error per branch: drop the "expected a string" branch
    # when the value was a mapping, so the line names the real problem inside it.
    specific = [e for e in errors if not (e["type"] == "string_type" and e["loc"] and e["loc"][-1] == "str"
                                          and isinstance(e.get("input"), dict))]
    errors = specific or errors
    # An unknown key explains a "missing" one beside it (a typo), so report it first.
    errors.sort(key=lambda e: e["type"] == "missing")
    first = errors[0]
    loc = tuple(first["loc"])
    path = _loc_to_path(loc)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    got = first.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent_loc = loc[:-1]
        path = _loc_to_path(parent_loc)
        choices = _fields_at(parent_loc, root)
        msg = _choice_msg(key, choices, "unknown key")
        return SpecError(msg, path=path or None, source=source)
    if kind == "missing":
        msg = "required field is missing"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {bound}, got {got!r}"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        msg = _choice_msg(str(got), choices, "unexpected value")
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = f"expected an integer, got {got!r}"
    elif kind in ("float_parsing", "float_type"):
        msg = f"expected a number, got {got!r}"
    elif kind in ("bool_parsing", "bool_type"):
        msg = f"expected true or false, got {got!r}"
    elif kind in ("string_type",):
        msg = f"expected a string, got {got!r}"
    elif kind in ("list_type", "tuple_type"):
        msg = f"expected a list, got {got!r}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        msg = f"expected a mapping, got {got!r}"
    elif kind in ("too_short", "too_long"):
        msg = f"{first['msg'].lower()}, got {got!r}"
    elif kind == "value_error":
        msg = str(ctx.get("error", first["msg"]))
        # Our validators put the nested path in front: "loss: ..." / "metrics[0]: ..."
        m = re.match(r"^([\w.\[\]]+): (.*)$", msg)
        if m and (m.group(1).split(".")[0].split("[")[0] in Spec.model_fields or m.group(1).startswith("[")):
            sub, msg = m.group(1), m.group(2)
            path = f"{path}{sub}" if sub.startswith("[") else (f"{path}.{sub}" if path else sub)
    else:
        msg = f"{first['msg']}, got {got!r}"
    if len(errors) > 1 and kind not in ("literal_error",):
        others = len({_loc_to_path(tuple(e["loc"])) for e in errors[1:]} - {path})
        if others:
            msg += f" (and {others} more problem{'s' if others > 1 else ''})"
    return SpecError(msg, path=path or None, source=source)


def _choice_msg(value: str, choices: Any, what: str) -> str:
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(choices)
    return f"{what} {value!r}{hint} (expected one of: {listing})"
