"""What ``unified migrate`` found: one :class:`Finding` per construct, the text table and the JSON report.

Framework-free and LibCST-free (the CLI formats a report without parsing anything).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

ACTIONS = ("converted", "manual", "unsupported")
EXIT_NOTHING, EXIT_CHANGED, EXIT_MANUAL, EXIT_USAGE = 0, 1, 2, 3


@dataclass(frozen=True)
class Finding:
    """One recognised construct.

    Attributes:
        file: the file's path as given on the command line (or below the given directory).
        line: 1-based line; col: 1-based column of the construct in the original file.
        construct: what was found, e.g. ``pl.Trainer(max_epochs=)`` or ``model.fit(callbacks=)``.
        action: ``converted`` (rewritten onto the facade), ``manual`` (needs a person: left in place or
            marked with a ``TODO(unified migrate)`` comment) or ``unsupported`` (the facade has no
            equivalent yet: not carried over).
        rule: the rule id, ``<framework>.<topic>`` (see docs/migration.md).
        hint: one line on what happened or what to do.
    """

    file: str
    line: int
    col: int
    construct: str
    action: str
    rule: str
    hint: str

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")


@dataclass
class FileResult:
    """The outcome for one file: its findings, the new text (None: unchanged) and any extracted specs."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    old_text: Optional[str] = None
    new_text: Optional[str] = None
    specs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.new_text is not None and self.new_text != self.old_text


@dataclass
class MigrationResult:
    """Every file's result, in path order."""

    files: list[FileResult] = field(default_factory=list)
    written: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [f for fr in self.files for f in fr.findings]

    @property
    def changed_files(self) -> list[FileResult]:
        return [fr for fr in self.files if fr.changed]

    def exit_code(self) -> int:
        """2 when manual items remain, else 1 when something changed (or would), else 0."""
        if any(f.action == "manual" for f in self.findings):
            return EXIT_MANUAL
        return EXIT_CHANGED if self.changed_files else EXIT_NOTHING

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in ACTIONS}
        for f in self.findings:
            out[f.action] += 1
        return out

    def to_json(self) -> str:
        return json.dumps({
            "files_scanned": len(self.files),
            "files_changed": [fr.path for fr in self.changed_files],
            "written": self.written,
            "counts": self.counts(),
            "exit_code": self.exit_code(),
            "findings": [asdict(f) for f in self.findings],
        }, indent=2)

    def to_text(self) -> str:
        rows = [(f"{f.file}:{f.line}:{f.col}", f.construct, f.action, f.rule, f.hint) for f in self.findings]
        lines = []
        if rows:
            head = ("location", "construct", "action", "rule", "hint")
            widths = [min(max(len(r[i]) for r in rows + [head]), cap) for i, cap in enumerate((48, 40, 11, 40, 0))]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths[:4]) + "  {}"
            lines.append(fmt.format(*head))
            lines.extend(fmt.format(*r) for r in rows)
        c = self.counts()
        verb = "rewritten" if self.written else "would change"
        lines.append(f"{len(self.files)} file(s) scanned, {len(self.changed_files)} {verb}; "
                     f"{c['converted']} converted, {c['manual']} manual, {c['unsupported']} unsupported")
        return "\n".join(lines) + "\n"
