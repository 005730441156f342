"""The tool checks its own output: what the rewrite would leave broken becomes a manual finding with a
``TODO(unified migrate)`` comment at (just above) the broken line.

Run on every rewritten file before anything is written or reported:

- **undefined names**: pyflakes on the original and on the result; a name that the original defined and
  the result does not (an evaluator that was removed, ``val_metrics`` never assigned) is a finding at each
  line that uses it;
- **the rewritten objects' API**: every use of a name bound to ``UnifiedTrainer(...)`` (or to what its
  ``fit`` returns) must be an attribute the facade has (``fit``, ``evaluate``, ``result`` ...): ``trainer.on``,
  ``trainer.state``, ``trainer.has_event_handler``, ``RunningAverage(...).attach(trainer, ...)`` are
  findings;
- **lost registrations**: a function that was registered or called in the original (a decorator, a
  reference) and is neither in the result is a finding at its ``def``.

Lines already carrying a ``TODO(unified migrate)`` comment were reported by a rule; they are not reported
twice.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider, ScopeProvider

from unified.migrate.report import Finding
from unified.migrate.rule import TODO

# What a UnifiedTrainer object offers (unified/trainer.py) and what its fit() returns (FitResult).
FACADE_ATTRS = {"fit", "evaluate", "predict", "predict_labels", "export", "model", "result", "run_dir", "spec",
                "backend", "extra_callbacks"}
RESULT_ATTRS = {"status", "metrics", "best", "epochs", "global_step", "run_dir", "train_time_s", "wall_time_s",
                "summary", "history"}


@dataclass(frozen=True)
class Problem:
    line: int  # in the rewritten text
    col: int
    construct: str
    rule: str
    hint: str


def undefined_names(text: str, path: str = "<string>") -> list[tuple[int, int, str]]:
    """(line, col, name) of every undefined name pyflakes reports (``[]`` when pyflakes is missing)."""
    try:
        from pyflakes import api, messages
    except ImportError:  # pragma: no cover - pyflakes is part of the migrate extra
        return _undefined_by_scope(text)

    class Reporter:
        def __init__(self) -> None:
            self.found: list[tuple[int, int, str]] = []

        def unexpectedError(self, *_: Any) -> None:
            pass

        def syntaxError(self, *_: Any) -> None:
            pass

        def flake(self, message: Any) -> None:
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal)):
                self.found.append((message.lineno, message.col + 1, str(message.message_args[0])))

    rep = Reporter()
    api.check(text, path, rep)
    return rep.found


def _undefined_by_scope(text: str) -> list[tuple[int, int, str]]:  # pragma: no cover - fallback
    import builtins

    wrapper = MetadataWrapper(cst.parse_module(text))
    scopes = wrapper.resolve(ScopeProvider)
    pos = wrapper.resolve(PositionProvider)
    out = []
    for scope in {s for s in scopes.values() if s is not None}:
        for access in scope.accesses:
            if not access.referents and isinstance(access.node, cst.Name) and not hasattr(builtins, access.node.value):
                p = pos[access.node].start
                out.append((p.line, p.column + 1, access.node.value))
    return out


def _statements(wrapper: MetadataWrapper) -> list[tuple[int, int, cst.CSTNode]]:
    """(first line, last line, node) of every statement; a def/class starts at its first decorator."""
    pos = wrapper.resolve(PositionProvider)
    out = []
    for node, p in pos.items():
        if isinstance(node, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            start = p.start.line
            decorators = getattr(node, "decorators", ())
            if decorators:
                start = min(start, pos[decorators[0]].start.line)
            out.append((start, p.end.line, node))
    return out


def statement_at(stmts: list[tuple[int, int, cst.CSTNode]], line: int) -> Optional[cst.CSTNode]:
    """The innermost statement covering ``line``."""
    best = None
    for start, end, node in stmts:
        if start <= line <= end:
            header_only = isinstance(node, cst.BaseCompoundStatement)
            span = end - start
            key = (span, header_only)
            if best is None or key < best[0]:
                best = (key, node)
    return best[1] if best else None


def _has_todo(node: cst.CSTNode) -> bool:
    lines = list(getattr(node, "leading_lines", ()))
    if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
        lines += list(node.lines_after_decorators)
    return any(el.comment is not None and TODO in el.comment.value for el in lines)


def _bound_to(wrapper: MetadataWrapper, module: cst.Module) -> dict[cst.Name, str]:
    """Assignment targets ``x = UnifiedTrainer(...)`` -> "trainer", ``r = <trainer>.fit(...)`` -> "result"."""
    trainers: set[str] = set()
    out: dict[cst.Name, str] = {}

    class Collect(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            if len(node.targets) != 1 or not isinstance(node.targets[0].target, cst.Name):
                return
            v = node.value
            if isinstance(v, cst.Call) and isinstance(v.func, cst.Name) and v.func.value == "UnifiedTrainer":
                trainers.add(node.targets[0].target.value)
                out[node.targets[0].target] = "trainer"
            elif (isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and v.func.attr.value == "fit"
                  and isinstance(v.func.value, cst.Name) and v.func.value.value in trainers):
                out[node.targets[0].target] = "result"

    module.visit(Collect())
    return out


def problems(old_text: str, new_text: str, path: str) -> list[Problem]:
    """What in ``new_text`` the rewrite broke (lines of ``new_text``), without the lines that have a TODO."""
    new_module = cst.parse_module(new_text)
    wrapper = MetadataWrapper(new_module, unsafe_skip_copy=True)
    pos = wrapper.resolve(PositionProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    scopes = wrapper.resolve(ScopeProvider)
    found: list[Problem] = []
    # 1. names the original defined and the result does not
    before = {name for _, _, name in undefined_names(old_text, path)}
    for line, col, name in undefined_names(new_text, path):
        if name not in before:
            found.append(Problem(line, col, name, "verify.undefined-name",
                                 f"{name} is not defined after the rewrite (the object it named was replaced by "
                                 f"UnifiedTrainer): port this line to the facade (trainer.result.metrics, "
                                 f"a unified.callbacks.Callback) or remove it"))
    # 2. uses of the rewritten objects the facade does not have
    for target, kind in _bound_to(wrapper, new_module).items():
        scope = scopes.get(target)
        if scope is None:
            continue
        allowed = FACADE_ATTRS if kind == "trainer" else RESULT_ATTRS
        what = "UnifiedTrainer" if kind == "trainer" else "FitResult"
        for assignment in scope.assignments[target.value]:
            if getattr(assignment, "node", None) is not target:
                continue
            for access in assignment.references:
                node = access.node
                parent = parents.get(node)
                p = pos[node].start
                if isinstance(parent, cst.Attribute) and parent.value is node:
                    if parent.attr.value in allowed:
                        continue
                    construct = f"{target.value}.{parent.attr.value}"
                    found.append(Problem(p.line, p.column + 1, construct, "verify.facade-attribute",
                                         f"{construct}: {what} has no {parent.attr.value!s} ({target.value} is now a "
                                         f"{what}; see UnifiedTrainer.fit/evaluate/predict, result.metrics, "
                                         f"unified.callbacks.Callback)"))
                elif isinstance(node, cst.Name):
                    found.append(Problem(p.line, p.column + 1, target.value, "verify.facade-object",
                                         f"{target.value} is passed on here but is now a {what}, not the "
                                         f"framework's object this code expects"))
    # 3. functions registered or called in the original that nothing registers or calls now
    old_wrapper = MetadataWrapper(cst.parse_module(old_text), unsafe_skip_copy=True)
    used_before = _function_uses(old_wrapper)
    for key, (node, uses) in _function_uses(wrapper).items():
        if uses == 0 and used_before.get(key, (None, 0))[1] > 0:
            p = pos[node.name].start
            found.append(Problem(p.line, p.column + 1, f"def {node.name.value}", "verify.lost-registration",
                                 f"{node.name.value} was registered or called in the original and nothing calls "
                                 f"it now: port it to a unified.callbacks.Callback hook and pass it as "
                                 f"UnifiedTrainer(..., callbacks=[...])"))
    stmts = _statements(wrapper)
    out = []
    for prob in found:
        stmt = statement_at(stmts, prob.line)
        if stmt is not None and _has_todo(stmt):
            continue
        out.append(prob)
    return out


def _function_uses(wrapper: MetadataWrapper) -> dict[tuple[str, ...], tuple[cst.FunctionDef, int]]:
    """Every function (by its nesting path) -> (node, decorators + references)."""
    scopes = wrapper.resolve(ScopeProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    out: dict[tuple[str, ...], tuple[cst.FunctionDef, int]] = {}
    for node in list(scopes):
        if not isinstance(node, cst.FunctionDef):
            continue
        path: list[str] = [node.name.value]
        cur = parents.get(node)
        while cur is not None:
            if isinstance(cur, (cst.FunctionDef, cst.ClassDef)):
                path.insert(0, cur.name.value)
            cur = parents.get(cur)
        if len(path) > 1 and isinstance(parents.get(parents.get(node)), cst.ClassDef):
            continue  # a method: called through its object, not by name
        scope = scopes.get(node)
        refs = 0
        if scope is not None:
            for a in scope.assignments[node.name.value]:
                if getattr(a, "node", None) is node:
                    refs += len(a.references)
        out[tuple(path)] = (node, refs + len(node.decorators))
    return out


def mark(new_text: str, todos: list[tuple[int, str]]) -> str:
    """``new_text`` with ``# TODO(unified migrate): hint`` above the statement at each (line, hint)."""
    if not todos:
        return new_text
    module = cst.parse_module(new_text)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    stmts = _statements(wrapper)
    wanted: dict[cst.CSTNode, list[str]] = {}
    for line, hint in todos:
        stmt = statement_at(stmts, line)
        if stmt is not None and hint not in wanted.setdefault(stmt, []):
            wanted[stmt].append(hint)

    class Mark(cst.CSTTransformer):
        def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> Any:  # type: ignore[override]
            if original in wanted and isinstance(updated, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
                comments = [cst.EmptyLine(comment=cst.Comment(f"# {TODO}: {h}")) for h in wanted[original]]
                return updated.with_changes(leading_lines=[*updated.leading_lines, *comments])
            return updated

    return module.visit(Mark()).code


def line_map(old_text: str, new_text: str) -> dict[int, int]:
    """1-based line of ``new_text`` -> the line of ``old_text`` it comes from (or replaced)."""
    a, b = old_text.splitlines(), new_text.splitlines()
    out: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        for j in range(j1, j2):
            i = i1 + (j - j1) if tag == "equal" else i1 + min(j - j1, max(i2 - i1 - 1, 0))
            out[j + 1] = min(i, max(len(a) - 1, 0)) + 1
    return out


def verify(old_text: str, new_text: str, path: str) -> tuple[str, list[Finding]]:
    """Check a rewrite; returns the text with TODO comments at the broken lines and the manual findings
    (located at the original file's lines)."""
    found = problems(old_text, new_text, path)
    if not found:
        return new_text, []
    to_old = line_map(old_text, new_text)
    findings = [Finding(path, to_old.get(p.line, p.line), p.col, p.construct, "manual", p.rule, p.hint) for p in found]
    marked = mark(new_text, [(p.line, p.hint) for p in found])
    return marked, findings
