"""Running the rules over files: read, parse, rewrite, diff, write. Imports LibCST (loaded lazily by
``unified.migrate.migrate``)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Optional

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
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
    result.findings.extend(_todo_findings(path, text))
    result.findings.sort(key=lambda f: (f.line, f.col))
    if not any(r.replace or r.before or r.todo for r in rules):
        return result
    new = wrapper.visit(Apply(rules))
    context = CodemodContext()
    needed = sorted({imp for r in rules for imp in r.imports_needed})
    if needed:
        for mod, obj in needed:
            AddImportsVisitor.add_needed_import(context, mod, obj)
        new = AddImportsVisitor(context).transform_module(new)
    for mod, obj, asname in _imports_of(module):
        RemoveImportsVisitor.remove_unused_import(context, mod, obj, asname)
    new = RemoveImportsVisitor(context).transform_module(new)
    result.findings.sort(key=lambda f: (f.line, f.col))
    if new.code != text:
        result.new_text = new.code
    return result


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
