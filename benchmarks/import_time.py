"""Import time of ``unified``, and proof that importing it loads no framework.

Run:  python benchmarks/import_time.py [--repeats N] [--json OUT]

Each statement runs in a fresh interpreter (``subprocess``, the interpreter running this script, the
repository root as working directory so a checkout works without installing). Wall time per run is the
whole ``python -c ...`` process; the median of ``--repeats`` runs is reported, next to the median of
``python -c pass`` (interpreter start-up) measured in the same alternation, so the import's own cost is
the difference. A separate interpreter then lists ``sys.modules`` after the import: none of torch,
tensorflow, keras, jax, pytorch_lightning (or lightning / lightning_fabric), ignite and optuna (which
``unified tune`` imports only when a search runs) may be loaded. Exit status 1 if one is.

Three statements are measured: ``import unified`` (the package; its public names load lazily),
``from unified import UnifiedTrainer`` (what using the facade imports: pydantic, numpy, the spec ...) and
``import unified.tune`` (the search command's package, Optuna not yet imported).

The test suite checks only behaviour (``import unified`` loads no third-party module, see
tests/unified/test_import.py); the time lives here. For scale: the suite used to assert a median
in-process ``import unified`` under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "pytorch_lightning", "lightning", "lightning_fabric", "ignite",
              "optuna")
STATEMENTS = {
    "import unified": "import unified",
    "from unified import UnifiedTrainer": "from unified import UnifiedTrainer",
    "import unified.tune": "import unified.tune",
}


def _run(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baseline_modules() -> set[str]:
    return set(_modules_after("pass"))


def _top_level(mods: list[str]) -> list[str]:
    return sorted({m.split(".", 1)[0] for m in mods})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="fresh interpreters per statement (default 15)")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    # warm the OS file cache and the .pyc files once (not counted)
    for code in ["pass", *STATEMENTS.values()]:
        _run(code)
    times: dict[str, list[float]] = {"python -c pass": [], **{name: [] for name in STATEMENTS}}
    for _ in range(args.repeats):  # alternate, so slow spells of the machine hit every statement alike
        times["python -c pass"].append(_run("pass"))
        for name, code in STATEMENTS.items():
            times[name].append(_run(code))
    med = {name: statistics.median(v) for name, v in times.items()}

    base = _baseline_modules()
    report: dict[str, dict] = {}
    failed = False
    for name, code in STATEMENTS.items():
        mods = _modules_after(code)
        loaded = [f for f in FRAMEWORKS if any(m == f or m.startswith(f + ".") for m in mods)]
        failed |= bool(loaded)
        new = [m for m in mods if m not in base]
        third_party = [m for m in _top_level(new) if m not in sys.stdlib_module_names and m != "unified"
                       and not m.startswith("_") and m != "cython_runtime"]
        report[name] = {"median_s": med[name], "minus_startup_s": med[name] - med["python -c pass"],
                        "runs_s": times[name], "frameworks_imported": loaded, "new_modules": len(new),
                        "third_party_top_level": third_party}

    print(f"Import time, fresh `{Path(sys.executable).name} -c` per run, median of {args.repeats} "
          f"(alternating with `python -c pass`); Python {platform.python_version()}, {os.cpu_count()} CPUs.")
    print()
    print("| statement | median ms | minus interpreter start-up ms | frameworks imported |")
    print("|---|---:|---:|---|")
    print(f"| `python -c pass` | {1000 * med['python -c pass']:.1f} | - | - |")
    for name, r in report.items():
        fw = ", ".join(r["frameworks_imported"]) or "none"
        print(f"| `{name}` | {1000 * r['median_s']:.1f} | {1000 * r['minus_startup_s']:.1f} | {fw} |")
    print()
    for name, r in report.items():
        print(f"`{name}`: {r['new_modules']} modules beyond a bare interpreter; third-party top-level: "
              f"{', '.join(r['third_party_top_level']) or 'none'}.")
    print(f"Checked for: {', '.join(FRAMEWORKS)}.")
    if failed:
        print("FAIL: importing unified loaded a framework (see the table)")
    else:
        print("OK: no framework module was imported.")

    if args.json:
        out = {"python": platform.python_version(), "executable": sys.executable, "repeats": args.repeats,
               "startup_median_s": med["python -c pass"], "startup_runs_s": times["python -c pass"],
               "statements": report, "checked_frameworks": list(FRAMEWORKS), "ok": not failed}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
