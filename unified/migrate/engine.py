"""Running the rules over files: read, parse, rewrite, diff, write. Imports LibCST (loaded lazily by
``unified.migrate.migrate``)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Optional

import libcst as cst
from libcst.metadata import MetadataWrapper

from unified.files import atomic_write_text
from unified.migrate.report import FileResult, Finding, MigrationResult
from unified.migrate.rule import TODO, Apply, Rule

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".tox", ".venv", "venv", "node_modules", ".mypy_cache",
             ".pytest_cache", "build", "dist", ".eggs"}
_TODO_RE = re.compile(r"#\s*" + re.escape(TODO) + r":\s*(?P<hint>.*)$")


def rule_classes() -> list[type[Rule]]:
    from unified.migrate.ignite_rules import IgniteRule
    from unified.migrate.keras_rules import KerasRule
    from unified.migrate.lightning_rules import LightningRule

    return [LightningRule, IgniteRule, KerasRule]


def python_files(root: Path) -> list[Path]:
    """``root`` itself, or every ``*.py`` below it (sorted; VCS, cache and virtualenv folders skipped)."""
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return out


def migrate_source(text: str, path: str = "<string>", stem: Optional[str] = None) -> FileResult:
    """Migrate one file's text (nothing is written). The result's ``new_text`` is None when unchanged."""
    result = FileResult(path=path, old_text=text)
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as e:
        result.findings.append(Finding(path, e.raw_line, e.raw_column + 1, "file", "manual", "file.syntax-error",
                                       f"not valid Python, left unchanged: {e.message.splitlines()[0][:120]}"))
        return result
    stem = stem or Path(path).stem
    wrapper = MetadataWrapper(module)
    rules = [cls(path, wrapper.module, stem) for cls in rule_classes()]
    for rule in rules:
        wrapper.visit(rule)
    for rule in rules:
        result.findings.extend(rule.findings)
        result.specs.extend(rule.specs)
    todo_comments = _todo_findings(path, text)
    if not any(r.replace or r.before for r in rules):
        # Nothing is rewritten: no conversion happened and nothing was dropped; what needs a person stays.
        result.findings = [f for f in result.findings if f.action == "manual"] + todo_comments
        result.specs = []
        result.findings.sort(key=lambda f: (f.line, f.col))
        return result
    new = wrapper.visit(Apply(rules))
    needed = sorted({imp for r in rules for imp in r.imports_needed})
    new = remove_unused_imports(module, new)
    new = add_imports(new, needed)
    new_text = new.code
    if new_text != text:
        from unified.migrate.verify import verify

        new_text, broken = verify(text, new_text, path)
        result.findings.extend(broken)
        result.new_text = new_text
    result.findings.extend(todo_comments)
    result.findings.sort(key=lambda f: (f.line, f.col))
    return result


def _names_used(module: cst.Module) -> set[str]:
    """Every name read outside import statements (the root of ``a.b.c`` counts as ``a``)."""
    used: set[str] = set()

    class Names(cst.CSTVisitor):
        def visit_Import(self, node: cst.Import) -> bool:
            return False

        def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
            return False

        def visit_Name(self, node: cst.Name) -> None:
            used.add(node.value)

    module.visit(Names())
    return used


def _bound_name(alias: cst.ImportAlias) -> str:
    if alias.asname is not None:
        return cst.helpers.get_full_name_for_node(alias.asname.name) or ""
    return (cst.helpers.get_full_name_for_node(alias.name) or "").split(".")[0]


def remove_unused_imports(original: cst.Module, new: cst.Module) -> cst.Module:
    """Drop the framework imports the rewrite made unused: used in ``original``, unused in ``new``.

    An import that was unused before is the user's business and stays; a removed import line hands its
    blank lines and comments to the next statement, so import groups keep their separation.
    """
    candidates = {(m, n, a) for m, n, a in _imports_of(original)}
    if not candidates:
        return new
    before, after = _names_used(original), _names_used(new)
    drop = {_bound_name_of(m, n, a) for m, n, a in candidates}
    drop = {b for b in drop if b in before and b not in after}
    if not drop:
        return new
    body = list(new.body)
    out: list[cst.BaseStatement] = []
    carry: list[cst.EmptyLine] = []
    for stmt in body:
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and _is_framework_import(stmt.body[0]):
            imp = stmt.body[0]
            assert isinstance(imp, (cst.Import, cst.ImportFrom))
            names = list(imp.names) if not isinstance(imp.names, cst.ImportStar) else []
            keep = [a for a in names if _bound_name(a) not in drop]
            if names and not keep:
                carry += list(stmt.leading_lines)
                continue
            if len(keep) != len(names):
                last_comma = names[-1].comma
                keep[-1] = keep[-1].with_changes(comma=last_comma)
                stmt = stmt.with_changes(body=[imp.with_changes(names=keep)])
        if carry:
            lines = list(stmt.leading_lines)
            if not (lines and all(c.comment is None for c in carry) and lines[0].comment is None):
                lines = carry + lines
            stmt = stmt.with_changes(leading_lines=lines)
            carry = []
        out.append(stmt)
    return new.with_changes(body=out)


def _bound_name_of(mod: str, obj: Optional[str], asname: Optional[str]) -> str:
    if asname:
        return asname
    return obj if obj else mod.split(".")[0]


FRAMEWORKS = ("pytorch_lightning", "lightning", "ignite", "keras", "tensorflow", "tf_keras")


def _is_framework_import(small: cst.BaseSmallStatement) -> bool:
    if isinstance(small, cst.ImportFrom) and small.module is not None and not small.relative:
        return (cst.helpers.get_full_name_for_node(small.module) or "").split(".")[0] in FRAMEWORKS
    if isinstance(small, cst.Import):
        return all((cst.helpers.get_full_name_for_node(a.name) or "").split(".")[0] in FRAMEWORKS for a in small.names)
    return False


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom))
                                                              for s in stmt.body)


def _is_string_line(stmt: cst.CSTNode) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


def add_imports(module: cst.Module, needed: list[tuple[str, str]]) -> cst.Module:
    """``from mod import obj`` for each needed pair not imported yet, right after the last import of the
    module's leading import block (after its docstrings when it has no imports); no blank lines added."""
    have = set()
    for stmt in module.body:
        if _is_import_line(stmt):
            for small in stmt.body:
                if isinstance(small, cst.ImportFrom) and small.module is not None and not isinstance(small.names, cst.ImportStar):
                    mod = cst.helpers.get_full_name_for_node(small.module) or ""
                    have |= {(mod, cst.helpers.get_full_name_for_node(a.name)) for a in small.names if a.asname is None}
    missing = [(m, o) for m, o in needed if (m, o) not in have]
    if not missing:
        return module
    body = list(module.body)
    at = 0
    for i, stmt in enumerate(body):
        if _is_import_line(stmt):
            at = i + 1
        elif _is_string_line(stmt) and at == i:
            at = i + 1
        elif isinstance(stmt, cst.Try) and all(_is_import_line(s) for s in stmt.body.body):
            at = i + 1
        else:
            break
    new_lines = [cst.parse_statement(f"from {m} import {o}") for m, o in missing]
    if at == 0 and body and not _is_import_line(body[0]):
        # no docstring, no imports: above the first statement, which keeps its leading comments
        first = body[0]
        new_lines[0] = new_lines[0].with_changes(leading_lines=first.leading_lines)
        body[0] = first.with_changes(leading_lines=[cst.EmptyLine()])
    elif at > 0 and not _is_import_line(body[at - 1]) and at < len(body):
        # right after the docstring(s): a blank line before the code, as it was
        pass
    return module.with_changes(body=body[:at] + new_lines + body[at:])


def _imports_of(module: cst.Module) -> list[tuple[str, Optional[str], Optional[str]]]:
    """Framework imports (module, name, alias) that may become unused after the rewrite."""
    out: list[tuple[str, Optional[str], Optional[str]]] = []
    frameworks = ("pytorch_lightning", "lightning", "ignite", "keras", "tensorflow", "tf_keras")
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, cst.ImportFrom) and small.module is not None and not isinstance(small.names, cst.ImportStar):
                mod = cst.helpers.get_full_name_for_node(small.module) or ""
                if mod.split(".")[0] in frameworks:
                    out += [(mod, cst.helpers.get_full_name_for_node(a.name), _asname(a)) for a in small.names]
            elif isinstance(small, cst.Import):
                for a in small.names:
                    name = cst.helpers.get_full_name_for_node(a.name) or ""
                    if name.split(".")[0] in frameworks:
                        out.append((name, None, _asname(a)))
    return out


def _asname(alias: cst.ImportAlias) -> Optional[str]:
    return cst.helpers.get_full_name_for_node(alias.asname.name) if alias.asname is not None else None


def _todo_findings(path: str, text: str) -> list[Finding]:
    """``TODO(unified migrate)`` comments left by an earlier run: still manual work."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        m = _TODO_RE.search(line)
        if m:
            out.append(Finding(path, i, line.index("#") + 1, "TODO comment", "manual", "file.todo",
                               m["hint"].strip()[:200]))
    return out


def migrate_path(path: str | os.PathLike[str], *, write: bool = False) -> MigrationResult:
    """Migrate a file or every ``*.py`` below a directory. Dry run unless ``write``.

    A file that is not UTF-8 or not valid Python is reported (``manual``) and left alone; the others
    still convert. With ``write``, each changed file is replaced atomically (temp file, then rename).
    """
    root = Path(path)
    result = MigrationResult(written=write)
    for file in python_files(root):
        shown = str(file)
        try:
            raw = file.read_bytes()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            result.files.append(FileResult(shown, [Finding(shown, 1, 1, "file", "manual", "file.not-utf8",
                                                           f"not UTF-8 (byte {e.start}), left unchanged")]))
            continue
        except OSError as e:
            result.files.append(FileResult(shown, [Finding(shown, 1, 1, "file", "manual", "file.unreadable",
                                                           f"cannot read: {e.strerror}")]))
            continue
        fr = migrate_source(text, shown)
        result.files.append(fr)
        if write and fr.changed:
            assert fr.new_text is not None
            atomic_write_text(file, fr.new_text)
    return result


def unified_diff(result: MigrationResult) -> str:
    out = []
    for fr in result.changed_files:
        assert fr.old_text is not None and fr.new_text is not None
        out += difflib.unified_diff(fr.old_text.splitlines(keepends=True), fr.new_text.splitlines(keepends=True),
                                    fromfile=f"a/{fr.path}", tofile=f"b/{fr.path}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def specs_yaml(result: MigrationResult) -> tuple[str, list[str]]:
    """The extracted specs as YAML: one spec as a mapping, several keyed by ``file:line``.

    Returns the text and the dotted keys left out because they are expressions of the script.
    """
    import yaml

    from unified.migrate.codegen import yaml_ready

    found: list[tuple[str, dict[str, Any]]] = []
    dropped: list[str] = []
    for fr in result.files:
        for entry in fr.specs:
            clean, gone = yaml_ready(entry["spec"])
            found.append((f"{fr.path}:{entry['line']}", {"backend": entry["backend"], **clean}))
            dropped += [f"{fr.path}:{entry['line']}: {k}" for k in gone]
    if len(found) == 1:
        body: Any = found[0][1]
    else:
        body = {where: spec for where, spec in found}
    return yaml.safe_dump(body, sort_keys=False), dropped
