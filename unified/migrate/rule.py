"""The base of the per-framework rules: LibCST metadata lookups, findings and the edits they plan.

A rule is a LibCST visitor over one file. Its ``visit_*`` methods only collect; ``plan()`` (run at the
end of the module) decides what to rewrite, so a decision may depend on anything in the file (a
LightningModule with manual optimization defined below the Trainer, say). Framework objects are
recognised by their qualified names (``QualifiedNameProvider`` resolves imports and aliases:
``import pytorch_lightning as pl; pl.Trainer`` and ``from lightning.pytorch import Trainer as T; T`` are
both ``Trainer`` of Lightning), never by how the script spells them.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Iterable, Optional, Union

import libcst as cst
from libcst.metadata import ParentNodeProvider, PositionProvider, QualifiedNameProvider

from unified.migrate.codegen import Code
from unified.migrate.report import Finding

Replacement = Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel, Callable[[cst.CSTNode], Any]]
TODO = "TODO(unified migrate)"


class Rule(cst.CSTVisitor):
    """Collects one framework's constructs in a file and plans their rewrite.

    Subclasses set ``framework`` and ``roots`` (the packages whose objects they recognise) and
    implement ``plan()``.
    """

    METADATA_DEPENDENCIES = (QualifiedNameProvider, PositionProvider, ParentNodeProvider)
    framework = ""
    roots: tuple[str, ...] = ()

    def __init__(self, path: str, module: cst.Module, stem: str) -> None:
        super().__init__()
        self.path, self.module, self.stem = path, module, stem
        self.findings: list[Finding] = []
        self.replace: dict[cst.CSTNode, Replacement] = {}
        self.before: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.todo: dict[cst.CSTNode, list[str]] = {}
        self.blank_after: dict[cst.CSTNode, int] = {}  # blank lines between inserted defs and the statement
        self.specs: list[dict[str, Any]] = []
        self.imports_needed: set[tuple[str, str]] = set()
        self.calls: list[cst.Call] = []
        self.assigns: dict[str, list[tuple[cst.CSTNode, cst.BaseExpression]]] = {}
        self.classes: list[cst.ClassDef] = []
        self.functions: dict[str, cst.FunctionDef] = {}
        self.attributes: list[cst.Attribute] = []
        self.subscripts: list[cst.Subscript] = []

    # -- collection (every rule sees the same things) -------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        self.calls.append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                self.assigns.setdefault(target.target.value, []).append((node, node.value))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.setdefault(node.name.value, node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.attributes.append(node)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        self.subscripts.append(node)

    def leave_Module(self, original_node: cst.Module) -> None:
        self.plan()

    def plan(self) -> None:  # pragma: no cover - every rule overrides it
        raise NotImplementedError

    # -- metadata ------------------------------------------------------------------------------------
    def qnames(self, node: cst.CSTNode) -> set[str]:
        try:
            return {q.name for q in self.get_metadata(QualifiedNameProvider, node, set())}
        except KeyError:
            return set()

    def fw(self, node: cst.CSTNode) -> Optional[str]:
        """The framework object ``node`` names, relative to its root (``Trainer``, ``callbacks.EarlyStopping``)."""
        for q in sorted(self.qnames(node)):
            for root in self.roots:
                if q.startswith(root + "."):
                    return q[len(root) + 1:]
        return None

    def fw_last(self, node: cst.CSTNode) -> Optional[str]:
        name = self.fw(node)
        return name.rsplit(".", 1)[-1] if name else None

    def pos(self, node: cst.CSTNode) -> tuple[int, int]:
        p = self.get_metadata(PositionProvider, node).start
        return p.line, p.column + 1

    def parent(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        return self.get_metadata(ParentNodeProvider, node, None)

    def stmt_of(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        """The statement line holding ``node`` (a SimpleStatementLine, or a compound statement)."""
        cur: Optional[cst.CSTNode] = node
        while cur is not None and not isinstance(cur, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            cur = self.parent(cur)
        return cur

    def func_of(self, node: cst.CSTNode) -> Optional[cst.FunctionDef]:
        cur = self.parent(node)
        while cur is not None and not isinstance(cur, cst.FunctionDef):
            cur = self.parent(cur)
        return cur

    def class_of(self, node: cst.CSTNode) -> Optional[cst.ClassDef]:
        cur = self.parent(node)
        while cur is not None and not isinstance(cur, cst.ClassDef):
            cur = self.parent(cur)
        return cur

    def indent(self, stmt: cst.CSTNode) -> str:
        # LibCST indents the continuation lines of an inserted expression by its block itself.
        return ""

    # -- values --------------------------------------------------------------------------------------
    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node).strip()

    def value(self, node: cst.BaseExpression) -> Any:
        """A Python literal for a literal expression, else :class:`Code` keeping the expression."""
        text = self.code(node)
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return Code(text)

    @staticmethod
    def arg(call: cst.Call, keyword: str, index: Optional[int] = None) -> Optional[cst.BaseExpression]:
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a.value
        if index is not None:
            positional = [a for a in call.args if a.keyword is None and not a.star]
            if index < len(positional):
                return positional[index].value
        return None

    @staticmethod
    def keywords(call: cst.Call) -> list[tuple[str, cst.BaseExpression, cst.Arg]]:
        return [(a.keyword.value, a.value, a) for a in call.args if a.keyword is not None]

    def follow(self, node: Optional[cst.BaseExpression], before: Optional[cst.CSTNode] = None
                ) -> Optional[cst.BaseExpression]:
        """Follow a Name to the value last assigned to it (in the file); anything else unchanged."""
        seen = 0
        while isinstance(node, cst.Name) and node.value in self.assigns and seen < 5:
            candidates = self.assigns[node.value]
            if before is not None:
                line = self.pos(before)[0]
                earlier = [c for c in candidates if self.pos(c[0])[0] <= line]
                candidates = earlier or candidates
            node = candidates[-1][1]
            seen += 1
        return node

    def assigned_name(self, call: cst.Call) -> Optional[str]:
        """``x`` for ``x = <call>`` (the call is the whole value), else None."""
        parent = self.parent(call)
        if isinstance(parent, cst.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name):
            return parent.targets[0].target.value
        return None

    def receiver(self, call: cst.Call) -> Optional[str]:
        """``x`` for ``x.method(...)``."""
        if isinstance(call.func, cst.Attribute) and isinstance(call.func.value, cst.Name):
            return call.func.value.value
        return None

    def method(self, call: cst.Call) -> Optional[str]:
        return call.func.attr.value if isinstance(call.func, cst.Attribute) else None

    def is_statement(self, call: cst.Call) -> bool:
        """True when the call is a whole expression statement (its result is not used)."""
        return isinstance(self.parent(call), cst.Expr)

    def root_name(self, node: cst.BaseExpression) -> Optional[str]:
        while isinstance(node, (cst.Attribute, cst.Subscript, cst.Call)):
            node = node.func if isinstance(node, cst.Call) else node.value
        return node.value if isinstance(node, cst.Name) else None

    def free_name(self, preferred: str) -> str:
        """``preferred`` unless the file binds it already, then ``preferred_2`` ..."""
        taken = set(self.assigns) | set(self.functions) | {c.name.value for c in self.classes}
        name, i = preferred, 2
        while name in taken:
            name, i = f"{preferred}_{i}", i + 1
        return name

    def alias_keys(self, alias: str, start: cst.CSTNode, bare_split: Optional[str], keys_read: list[str]) -> None:
        """``m = <metrics dict>`` then ``m["val_acc"]``: map the string keys read through ``m`` (same function)."""
        from unified.migrate.keys import facade_key

        scope, line = self.func_of(start), self.pos(start)[0]
        for sub in self.subscripts:
            if (not isinstance(sub.value, cst.Name) or sub.value.value != alias or self.pos(sub)[0] < line
                    or self.func_of(sub) is not scope or len(sub.slice) != 1
                    or not isinstance(sub.slice[0].slice, cst.Index)):
                continue
            key = self.value(sub.slice[0].slice.value)
            if not isinstance(key, str):
                continue
            new = facade_key(key, bare_split)
            if new is None:
                self.find(sub, self.code(sub), "manual", "metrics.key", f"{self.src(key)} has no facade key")
                stmt = self.stmt_of(sub)
                if stmt is not None:
                    self.mark_todo(stmt, f"{self.src(key)} is not a facade key (val/loss, val/<metric>, train/loss)")
                continue
            keys_read.append(new)
            self.replace[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
            self.find(sub, self.code(sub), "converted", "metrics.key", f'{alias}["{new}"]')

    @staticmethod
    def key_node(original: cst.CSTNode, key: str) -> cst.SimpleString:
        """The string literal ``key`` in the quotes of ``original`` (it may sit inside an f-string)."""
        quote = original.value[-1] if isinstance(original, cst.SimpleString) else '"'
        return cst.SimpleString(f"{quote}{key}{quote}")

    # -- findings and edits --------------------------------------------------------------------------
    def find(self, node: cst.CSTNode, construct: str, action: str, rule: str, hint: str) -> None:
        """Report a construct. A manual one also gets a TODO comment above its statement (written only
        when the file is rewritten), so every manual finding of a rewritten file is visible in it and a
        second run reports as many (``file.todo``); :meth:`mark_todo` right after replaces its text."""
        line, col = self.pos(node)
        construct = " ".join(construct.split())
        if len(construct) > 64:
            construct = construct[:61] + "..."
        self.findings.append(Finding(self.path, line, col, construct, action, f"{self.framework}.{rule}", hint))
        self._last_todo = None
        if action == "manual":
            stmt = self.stmt_of(node)
            if stmt is not None:
                self.todo.setdefault(stmt, []).append(f"# {TODO}: {hint}")
                self._last_todo = (stmt, len(self.todo[stmt]) - 1)

    def mark_todo(self, stmt: cst.CSTNode, hint: str) -> None:
        """The TODO text of the manual finding just reported (when at ``stmt``), else one more TODO."""
        last = getattr(self, "_last_todo", None)
        if last is not None and last[0] is stmt:
            self.todo[stmt][last[1]] = f"# {TODO}: {hint}"
            self._last_todo = None
            return
        self.todo.setdefault(stmt, []).append(f"# {TODO}: {hint}")

    def src(self, value: Any) -> str:
        """A value as the source quotes it: ``'acc'`` for a string, the expression's text for :class:`Code`."""
        return value.text if isinstance(value, Code) else repr(value)

    def remove(self, stmt: cst.CSTNode) -> None:
        self.replace[stmt] = cst.RemoveFromParent()

    def stmt(self, code: str) -> cst.BaseStatement:
        return cst.parse_statement(code)

    def expr(self, code: str) -> cst.BaseExpression:
        return cst.parse_expression(code)


class Apply(cst.CSTTransformer):
    """Carries out the edits planned by the rules (keyed by the original nodes)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        super().__init__()
        self.replace: dict[cst.CSTNode, Replacement] = {}
        self.before: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.todo: dict[cst.CSTNode, list[str]] = {}
        self.blank_after: dict[cst.CSTNode, int] = {}
        for r in rules:
            self.blank_after.update(r.blank_after)
            self.replace.update(r.replace)
            for k, v in r.before.items():
                self.before.setdefault(k, []).extend(v)
            for k, v in r.todo.items():
                self.todo.setdefault(k, []).extend(v)

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode) -> Any:  # type: ignore[override]
        new: Any = updated
        if original in self.replace:
            r = self.replace[original]
            new = r(updated) if callable(r) and not isinstance(r, cst.CSTNode) else r
        if original in self.todo and isinstance(new, cst.RemovalSentinel):
            new = updated  # a statement with manual work is never deleted
        if original in self.todo and isinstance(new, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            comments = [cst.EmptyLine(comment=cst.Comment(c)) for c in self.todo[original]]
            new = new.with_changes(leading_lines=[*new.leading_lines, *comments])
        if original in self.before:
            extra = list(self.before[original])
            if isinstance(new, cst.RemovalSentinel):
                return cst.FlattenSentinel(extra)
            if isinstance(new, (cst.SimpleStatementLine, cst.BaseCompoundStatement)) and extra:
                # Comments above the original statement stay above the new first statement.
                extra[0] = extra[0].with_changes(leading_lines=[*new.leading_lines, *extra[0].leading_lines])
                blank = [cst.EmptyLine()] * self.blank_after.get(original, 0)
                new = new.with_changes(leading_lines=blank)
            return cst.FlattenSentinel([*extra, new])
        return new
