"""``unified compare``: train one spec on several backends, each in its own process, and compare them.

Output directory (``--out``, default ``<logging.dir>/<name>/compare/<timestamp>``)::

    OUT/
      compare.json     per backend: status, exit code, epochs, global_step, final metrics, best,
                       train_time_s, ms_per_step, run_dir, error, per-step train/loss gap to the reference
      compare.md       the same as a markdown table (also printed to stdout)
      curves.png       train/loss per logged step and the monitored metric per epoch, one line per backend
      runs/<backend>/  each backend's ordinary run directory (``unified run --run-dir``)
      logs/<backend>.log   that process's stdout and stderr

Backend names are the registered ones (``unified backends``); ``keras-<tensor backend>`` (``keras-torch``,
``keras-tensorflow``, ``keras-jax``) means ``--backend keras --keras-backend <tensor backend>`` (the names come
from the registry: ``<backend>-<value>`` for each value of a backend's :class:`unified.registry.Variant`).
Without ``--backends`` every installed target runs (:func:`installed_targets`): each installed backend, and
a backend with variants once per variant whose library is importable (``keras-tensorflow``, ``keras-torch``,
``keras-jax``), since each is a different engine.
Nothing here imports a training framework; matplotlib is imported only to draw ``curves.png``.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from unified.errors import BackendUnavailableError, SpecError
from unified.files import atomic_write, atomic_write_json, atomic_write_text

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Target:
    """One column of the comparison: a user-facing name and the ``unified run`` arguments it stands for."""

    name: str  # as given: "lightning", "keras-torch"
    backend: str  # registered backend: "lightning", "keras"
    variant: Optional[str] = None  # the backend's variant (Keras's tensor backend), when the name gives one
    variant_flag: Optional[str] = field(default=None, compare=False)  # the `unified run` option that sets it

    @property
    def keras_backend(self) -> Optional[str]:  # the name compare.json has always used for the variant
        return self.variant

    def run_args(self) -> list[str]:
        args = ["--backend", self.backend]
        if self.variant and self.variant_flag:
            args += [self.variant_flag, self.variant]
        return args


@dataclass
class Outcome:
    """What one backend's process produced."""

    target: Target
    exit_code: int
    run_dir: Path
    log: Path
    seconds: float
    error: Optional[str] = None
    summary: dict[str, Any] = field(default_factory=dict)
    step_loss: dict[int, float] = field(default_factory=dict)  # step -> train/loss (step rows)
    monitor_curve: list[tuple[int, int, float]] = field(default_factory=list)  # (epoch, step, value)

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        if status in (None, "running"):
            return "interrupted" if self.exit_code == EXIT_INTERRUPTED else "failed"
        if self.exit_code != 0 and status in ("completed", "stopped_early"):
            return "failed"
        return str(status)


# -- backend names ------------------------------------------------------------------------------------------
def target_choices(registered: Sequence[str]) -> list[str]:
    """Every name ``--backends`` accepts: the registered backends, plus ``<backend>-<variant>`` for a
    backend with variants (``keras-tensorflow``, ``keras-torch``, ``keras-jax``)."""
    from unified.registry import available_backends

    entries = available_backends()
    out: list[str] = []
    for name in registered:
        out.append(name)
        variant = entries[name].variant if name in entries else None
        if variant is not None:
            out += [f"{name}-{v}" for v in variant.choices]
    return out


def installed_targets() -> list[Target]:
    """Every target that can run here, in registry order: each installed backend; a backend with variants
    once per installed variant (``keras-tensorflow``, ``keras-torch``, ``keras-jax``), never bare."""
    from unified.registry import available_backends

    out: list[Target] = []
    for name, entry in available_backends().items():
        if not entry.is_installed():
            continue
        if entry.variant is None:
            out.append(Target(name, name))
        else:
            out += [Target(f"{name}-{v}", name, v, entry.variant.cli_flag) for v in entry.variant.installed_choices()]
    return out


def parse_targets(text: Optional[str]) -> list[Target]:
    """``"lightning,keras-torch"`` -> targets; default (``None``): :func:`installed_targets`.

    Raises:
        SpecError: empty list, a name given twice, or an unknown name (with did-you-mean and the choices).
        BackendUnavailableError: nothing installed, or a named backend (or variant) not installed here.
    """
    from unified.registry import available_backends
    from unified.spec import _choice_msg

    entries = available_backends()
    if text is None:
        found = installed_targets()
        if not found:
            hints = "; ".join(f"{e.name}: {e.install_hint}" for e in entries.values())
            raise BackendUnavailableError(f"no training backend is installed ({hints})")
        return found
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise SpecError("expected a comma-separated list of backends, e.g. lightning,ignite", source="--backends")
    if "" in names:
        raise SpecError(f"empty backend name in {text!r}", source="--backends")
    targets: list[Target] = []
    for name in names:
        if name in entries:
            target = Target(name, name)
        else:
            base, _, value = name.partition("-")
            variant = entries[base].variant if base in entries else None
            if variant is not None and value in variant.choices:
                target = Target(name, base, value, variant.cli_flag)
            else:
                raise SpecError(_choice_msg(name, target_choices(list(entries)), "unknown backend"),
                                source="--backends")
        if any(t.name == name for t in targets):
            raise SpecError(f"backend {name!r} given twice", source="--backends")
        entry = entries[target.backend]
        if not entry.is_installed():
            raise BackendUnavailableError(f"--backends: backend {target.backend!r} is not installed here: "
                                          f"{entry.install_hint}")
        missing = entry.variant.missing_modules(target.variant) if entry.variant and target.variant else ()
        if missing:
            raise BackendUnavailableError(f"--backends: {name!r} needs {', '.join(missing)}, which is not installed "
                                          f"here (installed: {', '.join(t.name for t in installed_targets())})")
        targets.append(target)
    return targets


def monitor_of(spec: Any) -> tuple[str, str]:
    """The key ``summary.json`` ``best`` tracks (:func:`unified.spec.best_monitor`)."""
    from unified.spec import best_monitor

    return best_monitor(spec)


# -- running --------------------------------------------------------------------------------------------------
def default_out_dir(spec: Any) -> Path:
    from unified.rundir import new_run_dir

    return new_run_dir(spec.logging.dir, spec.name, "compare")


def check_out_dir(out: Path, targets: list[Target]) -> None:
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out}: exists and is not a directory", source="--out")
    if (out / "compare.json").exists():
        raise SpecError(f"{out}: already holds a comparison (compare.json); choose a new directory", source="--out")
    for t in targets:
        if (out / "runs" / t.name / "summary.json").exists():
            raise SpecError(f"{out}: runs/{t.name} already holds a run; choose a new directory", source="--out")


def _last_error_line(text: str) -> Optional[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("unified: error:"):
            return ln[len("unified: error:"):].strip()
    return lines[-1] if lines else None


def run_one(spec_path: str, target: Target, out: Path, overrides: list[str]) -> Outcome:
    """``python -m unified run`` for one backend in its own process; stdout+stderr go to ``logs/<name>.log``."""
    run_dir = out / "runs" / target.name
    log = out / "logs" / f"{target.name}.log"
    cmd = [sys.executable, "-m", "unified", "run", spec_path, *target.run_args(), "--run-dir", str(run_dir)]
    for ov in overrides:
        cmd += ["--set", ov]
    cmd.append("--no-progress")
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    seconds = time.perf_counter() - start
    atomic_write_text(log, f"$ {' '.join(cmd)}\n\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
                           f"\n--- exit code {proc.returncode} ---\n")
    outcome = Outcome(target, proc.returncode, run_dir, log, seconds)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        try:
            outcome.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            outcome.summary = {}
    if proc.returncode != 0:
        outcome.error = (_last_error_line(proc.stderr) or outcome.summary.get("error")
                         or f"exit code {proc.returncode}")
    return outcome


def read_curves(outcome: Outcome, monitor: str) -> None:
    """Fill ``step_loss`` (step rows) and ``monitor_curve`` (rows carrying ``monitor``) from metrics.csv."""
    path = outcome.run_dir / "metrics.csv"
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                epoch, step = int(row["epoch"]), int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            loss = row.get("train/loss") or ""
            if loss:
                outcome.step_loss[step] = float(loss)
            value = row.get(monitor) or ""
            if value:
                outcome.monitor_curve.append((epoch, step, float(value)))


def loss_gap(a: dict[int, float], b: dict[int, float]) -> tuple[Optional[float], int]:
    """Max absolute per-step train/loss difference over the steps both logged (None if none in common)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None, 0
    gaps = [abs(a[s] - b[s]) for s in common]
    return (math.nan if any(math.isnan(g) for g in gaps) else max(gaps)), len(common)


# -- reporting ------------------------------------------------------------------------------------------------
def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def build_report(spec_path: str, spec: Any, outcomes: list[Outcome], out: Path, overrides: list[str],
                 monitor: tuple[str, str]) -> dict[str, Any]:
    ref = next((o for o in outcomes if o.step_loss), None)
    backends: dict[str, Any] = {}
    for o in outcomes:
        s = o.summary
        steps = s.get("global_step")
        train_time = _num(s.get("train_time_s"))
        ms = train_time / steps * 1000.0 if train_time is not None and steps else None
        gap, n = loss_gap(ref.step_loss, o.step_loss) if ref is not None and o.step_loss else (None, 0)
        backends[o.target.name] = {
            "backend": o.target.backend,
            "keras_backend": o.target.keras_backend or s.get("keras_backend"),
            "status": o.status,
            "exit_code": o.exit_code,
            "epochs": s.get("epochs"),
            "global_step": steps,
            "metrics": s.get("metrics", {}),
            "best": s.get("best"),
            "train_time_s": train_time,
            "ms_per_step": ms,
            "process_time_s": round(o.seconds, 3),
            "train_loss_gap": {"reference": ref.target.name if ref else None, "max_abs": gap, "steps": n},
            "run_dir": str(o.run_dir),
            "log": str(o.log),
            "error": o.error,
        }
    return {
        "spec": spec_path,
        "name": spec.name,
        "overrides": overrides,
        "created": datetime.now().isoformat(timespec="seconds"),
        "out_dir": str(out),
        "monitor": {"key": monitor[0], "mode": monitor[1]},
        "log_every_n_steps": spec.trainer.log_every_n_steps,
        "reference": ref.target.name if ref else None,
        "backends": backends,
    }


def _cell(v: Any, fmt: str = ".4f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return format(v, fmt)
    return str(v)


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    """The comparison table (and the failures' error lines) as markdown."""
    rows = report["backends"]
    val_keys = ["val/loss"]
    for r in rows.values():
        val_keys += [k for k in r["metrics"] if k.startswith("val/") and k not in val_keys]
    ref = report["reference"]
    gap_col = f"max \\|Δ train/loss\\| vs {ref}" if ref else "max \\|Δ train/loss\\|"
    any_failed = any(r["exit_code"] != 0 for r in rows.values())
    header = ["backend", "status", "epochs", "steps", *val_keys, "train time s", "ms/step", gap_col]
    if any_failed:
        header.append("error")
    left = {"backend", "status", "error"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if h in left else "---:" for h in header) + "|"]
    for name, r in rows.items():
        status = r["status"] if r["exit_code"] == 0 else f"{r['status']} (exit {r['exit_code']})"
        gap = r["train_loss_gap"]
        if name == ref:
            gap_text = "(reference)"
        elif gap["max_abs"] is None:
            gap_text = "—"
        else:
            gap_text = f"{_cell(gap['max_abs'], '.2e')} ({gap['steps']} steps)"
        cells = [name, status, _cell(r["epochs"]), _cell(r["global_step"]),
                 *(_cell(_num(r["metrics"].get(k))) for k in val_keys),
                 _cell(r["train_time_s"], ".2f"), _cell(r["ms_per_step"], ".2f"), gap_text]
        if any_failed:
            cells.append(r["error"] or "")
        lines.append("| " + " | ".join(_esc(c) for c in cells) + " |")
    title = f"## {report['name']}: {', '.join(rows)}"
    sets = " ".join(f"--set {o}" for o in report["overrides"])
    notes = [f"Spec: `{report['spec']}`" + (f" with `{sets}`" if sets else ""),
             f"Monitored: `{report['monitor']['key']}` ({report['monitor']['mode']}); "
             f"train/loss gap over the steps logged by both (log_every_n_steps = {report['log_every_n_steps']}).",
             "Output: `compare.json`, `curves.png`, `runs/<backend>/`, `logs/<backend>.log`."]
    return "\n".join([title, "", *lines, "", *notes]) + "\n"


# -- the figure -----------------------------------------------------------------------------------------------
_STYLES = [  # (color, linestyle, marker, linewidth, markersize): later lines are thinner and dashed so that
    ("#1f77b4", "-", "o", 3.2, 9.0),  # identical curves stay distinguishable when they overlap exactly
    ("#ff7f0e", "--", "s", 1.8, 6.0),
    ("#2ca02c", ":", "^", 2.2, 6.5),
    ("#d62728", "-.", "D", 1.6, 5.0),
    ("#9467bd", (0, (5, 1, 1, 1, 1, 1)), "v", 1.6, 5.5),
    ("#8c564b", (0, (1, 2)), "P", 1.6, 6.0),
]


def draw_curves(path: Path, outcomes: list[Outcome], title: str, monitor: tuple[str, str]) -> None:
    """Two panels: train/loss (step rows) vs step, the monitored metric (epoch rows) vs step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    fig = Figure(figsize=(12, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax_loss, ax_mon = fig.subplots(1, 2)
    epoch_ends: dict[int, int] = {}  # epoch -> step at its end
    all_losses: list[float] = []
    ref = next((o for o in outcomes if o.step_loss), None)
    for i, o in enumerate(outcomes):
        color, ls, marker, lw, ms = _STYLES[i % len(_STYLES)]
        label = o.target.name if o.status in ("completed", "stopped_early") else f"{o.target.name} ({o.status})"
        alpha = 0.55 if i == 0 and len(outcomes) > 1 else 0.95
        if o.step_loss:
            steps = sorted(o.step_loss)
            losses = [o.step_loss[s] for s in steps]
            all_losses += [v for v in losses if math.isfinite(v)]
            gap, _ = loss_gap(ref.step_loss, o.step_loss) if ref is not None else (None, 0)
            gap_text = "reference" if o is ref else (
                "no common steps" if gap is None else "identical" if gap == 0 else f"max |Δ| {gap:.1e}")
            ax_loss.plot(steps, losses, color=color, linestyle=ls, linewidth=lw, alpha=alpha,
                         label=f"{label}  ({gap_text})", zorder=2 + i)
        if o.monitor_curve:
            xs = [s for _, s, _ in o.monitor_curve]
            ys = [v for _, _, v in o.monitor_curve]
            epoch_ends.update({e: st for e, st, _ in o.monitor_curve})
            ax_mon.plot(xs, ys, color=color, linestyle=ls, linewidth=lw, alpha=alpha, marker=marker,
                        markersize=ms, markerfacecolor=color if i else "none", markeredgewidth=1.6,
                        label=label, zorder=2 + i)
            best = o.summary.get("best") or {}
            if best.get("value") is not None and best.get("epoch") is not None:
                at = [(s, v) for e, s, v in o.monitor_curve if e == best["epoch"]]
                if at:
                    ax_mon.plot([at[-1][0]], [at[-1][1]], marker="*", markersize=16 - 2 * min(i, 3), color=color,
                                markeredgecolor="black", markeredgewidth=0.6, linestyle="none", zorder=10 + i)
        if not o.step_loss and not o.monitor_curve:  # keep the failed backend in the legends
            for ax in (ax_loss, ax_mon):
                ax.plot([], [], color=color, linestyle=ls, linewidth=lw, label=label)
    if all_losses and min(all_losses) > 0 and max(all_losses) / min(all_losses) > 20:
        ax_loss.set_yscale("log")
        ax_loss.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
    key, mode = monitor
    ax_loss.set_title("train/loss per logged step", fontsize=11)
    ax_loss.set_ylabel("train/loss")
    ax_mon.set_title(f"{key} per epoch ({mode} is better; \u2605 best epoch)", fontsize=11)
    ax_mon.set_ylabel(key)
    ends = sorted(epoch_ends.items())
    for ax in (ax_loss, ax_mon):
        ax.set_xlabel("step")
        ax.grid(True, axis="y", alpha=0.35)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ends:  # epoch ends: faint vertical lines, numbered on a top axis
            for _, step in ends:
                ax.axvline(step, color="0.88", linewidth=0.9, zorder=0)
            every = max(1, math.ceil(len(ends) / 15))
            shown = [(e, s) for j, (e, s) in enumerate(ends) if j % every == every - 1 or j == len(ends) - 1]
            top = ax.secondary_xaxis("top")
            top.set_xticks([s for _, s in shown], labels=[str(e) for e, _ in shown])
            top.tick_params(labelsize=8, colors="0.35", length=3)
            top.set_xlabel("epoch", fontsize=9, color="0.35")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=10, framealpha=0.9)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# -- the command ----------------------------------------------------------------------------------------------
def compare(spec_path: str, backends: Optional[str] = None, out: Optional[str] = None,
            overrides: Optional[list[str]] = None, stream: Any = None) -> tuple[int, dict[str, Any]]:
    """Validate, run every backend one after another, write the report. Returns (exit code, report).

    Exit code: 0 all backends succeeded; 1 any failed; 130 interrupted. Bad input raises SpecError /
    BackendUnavailableError before anything runs.
    """
    from unified.spec import load_spec

    log = stream or sys.stderr
    overrides = list(overrides or [])
    spec = load_spec(spec_path, overrides)  # a typo fails here, once, before any run
    targets = parse_targets(backends)
    monitor = monitor_of(spec)
    out_dir = Path(out) if out else None
    if out_dir is not None:
        check_out_dir(out_dir, targets)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        out_dir = default_out_dir(spec)

    outcomes: list[Outcome] = []
    interrupted = False
    for i, target in enumerate(targets, 1):
        log.write(f"compare: [{i}/{len(targets)}] {target.name} ...\n")
        log.flush()
        try:
            o = run_one(spec_path, target, out_dir, overrides)
        except KeyboardInterrupt:
            interrupted = True
            break
        read_curves(o, monitor[0])
        outcomes.append(o)
        done = f"{o.status} in {o.seconds:.1f}s" + (f" (exit {o.exit_code}: {o.error})" if o.exit_code else "")
        log.write(f"compare: [{i}/{len(targets)}] {target.name}: {done}\n")
        log.flush()
        if o.exit_code == EXIT_INTERRUPTED:
            interrupted = True
            break

    report = build_report(spec_path, spec, outcomes, out_dir, overrides, monitor)
    report["interrupted"] = interrupted
    text = markdown(report)
    atomic_write_json(out_dir / "compare.json", report)
    atomic_write_text(out_dir / "compare.md", text)
    if outcomes:
        draw_curves(out_dir / "curves.png", outcomes, f"{spec.name}: {' vs '.join(o.target.name for o in outcomes)}",
                    monitor)
    if interrupted:
        return EXIT_INTERRUPTED, report
    return (1 if any(o.exit_code != 0 for o in outcomes) else 0), report


__all__ = ["compare", "installed_targets", "parse_targets", "Target", "monitor_of", "loss_gap", "markdown"]
