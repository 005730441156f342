"""The conversion rate of ``unified migrate`` per construct over the test corpus (tests/migrate/corpus).

    python benchmarks/migrate_rate.py                 # static: what is converted / manual / unsupported
    python benchmarks/migrate_rate.py --run [--jobs 2] [--only NAME ...]
        # also run every script before and after migration and compare its "final <metric>:" line:
        # exit 0/1 -> the migrated script must run and match; exit 2 -> where it fails, the line has a TODO

A construct is counted once per occurrence (one report entry); the rate is converted / all entries of
that rule. ``--run`` executes each original and each migrated script in a fresh process in a temporary
folder (the corpus scripts use scikit-learn's bundled data and synthetic data they generate: no download).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "migrate" / "corpus"
FINAL = re.compile(r"^final (\w+): \[?(-?[0-9.]+(?:e-?\d+)?)", re.M)
# Scripts whose original needs an older framework (Lightning 1.x `gpus=`): only the migrated one runs.
ORIGINAL_CANNOT_RUN = {"lightning_legacy_gpus.py"}


def static_rates() -> tuple[dict[str, collections.Counter], dict]:
    from unified.migrate import migrate_text

    per_rule: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    per_file = {}
    for path in sorted(CORPUS.glob("*.py")):
        result = migrate_text(path.read_text(), path.name)
        for f in result.findings:
            per_rule[f.rule][f.action] += 1
        per_file[path.name] = result
    return per_rule, per_file


def run_one(script: Path, folder: Path) -> tuple[int, str, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, script.name], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=900)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def final_metric(output: str) -> tuple[str, float] | None:
    found = FINAL.findall(output)
    return (found[-1][0], float(found[-1][1])) if found else None


def run_pair(name: str, new_text: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        orig_dir, new_dir = Path(tmp, "orig"), Path(tmp, "new")
        orig_dir.mkdir()
        new_dir.mkdir()
        shutil.copy(CORPUS / name, orig_dir / name)
        (new_dir / name).write_text(new_text if new_text is not None else (CORPUS / name).read_text())
        row: dict = {"name": name}
        if name not in ORIGINAL_CANNOT_RUN:
            rc, out, secs = run_one(orig_dir / name, orig_dir)
            row.update(orig_rc=rc, orig=final_metric(out), orig_s=secs, orig_tail=out[-400:])
        rc, out, secs = run_one(new_dir / name, new_dir)
        row.update(new_rc=rc, new=final_metric(out), new_s=secs, new_tail=out[-400:], new_out=out,
                   run_dirs=len(list(new_dir.glob("**/summary.json"))))
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run each script before and after migration")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="script names (default: the whole corpus)")
    args = parser.parse_args()

    per_rule, per_file = static_rates()
    total = collections.Counter()
    print(f"{'rule':<44} {'found':>5} {'conv':>5} {'manual':>6} {'unsup':>5} {'rate':>6}")
    for rule in sorted(per_rule):
        c = per_rule[rule]
        n = sum(c.values())
        total.update(c)
        print(f"{rule:<44} {n:>5} {c['converted']:>5} {c['manual']:>6} {c['unsupported']:>5} "
              f"{c['converted'] / n:>6.0%}")
    n = sum(total.values())
    print(f"{'all constructs':<44} {n:>5} {total['converted']:>5} {total['manual']:>6} {total['unsupported']:>5} "
          f"{total['converted'] / n:>6.0%}")
    for fw in ("lightning", "ignite", "keras"):
        c = collections.Counter()
        for rule, counts in per_rule.items():
            if rule.startswith(fw + "."):
                c.update(counts)
        m = sum(c.values())
        print(f"{fw + ' (all rules)':<44} {m:>5} {c['converted']:>5} {c['manual']:>6} {c['unsupported']:>5} "
              f"{c['converted'] / m:>6.0%}")
    from unified.migrate.report import MigrationResult

    codes = {n: MigrationResult(files=[r]).exit_code() for n, r in per_file.items()}
    changed = sum(1 for r in per_file.values() if r.new_text is not None)
    print(f"files: {len(per_file)} in the corpus, {changed} rewritten "
          f"({sum(1 for n, r in per_file.items() if r.new_text is not None and codes[n] < 2)} with exit 0/1, "
          f"{sum(1 for n, r in per_file.items() if r.new_text is not None and codes[n] == 2)} with exit 2), "
          f"{len(per_file) - changed} left alone; "
          f"{sum(1 for r in per_file.values() if any(f.action == 'manual' for f in r.findings))} with manual items")
    if not args.run:
        return
    names = args.only or sorted(per_file)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda n: run_pair(n, per_file[n].new_text), names))
    print(f"\n{'script':<40} {'exit':>4} {'metric':<9} {'original':>9} {'migrated':>9} {'orig s':>7} {'new s':>7} "
          "runs  verdict")
    tally: collections.Counter = collections.Counter()
    for r in rows:
        name = r["name"]
        metric = (r.get("new") or r.get("orig") or ("?", None))[0]
        o = r.get("orig")
        nv = r.get("new")
        ostr = "n/a" if name in ORIGINAL_CANNOT_RUN else (f"{o[1]:.4f}" if o else f"rc={r.get('orig_rc')}")
        nstr = f"{nv[1]:.4f}" if nv else f"rc={r['new_rc']}"
        new_text = per_file[name].new_text
        if new_text is None:
            verdict = "left alone"
        elif codes[name] < 2:
            close = nv is not None and (o is None or (abs(nv[1] - o[1]) <= 0.05 if metric == "accuracy"
                                                     else nv[1] <= o[1] * 1.5 + 0.05))
            verdict = "runs, matches" if r["new_rc"] == 0 and close else "BROKEN"
        elif r["new_rc"] == 0:
            verdict = "exit 2, runs"
        else:
            verdict = "exit 2, fails at a TODO line" if _failing_line_has_todo(name, new_text, r["new_out"]) \
                else "exit 2, fails at a line WITHOUT a TODO"
        tally[verdict] += 1
        print(f"{name:<40} {codes[name]:>4} {metric:<9} {ostr:>9} {nstr:>9} {r.get('orig_s', 0):>7.1f} "
              f"{r['new_s']:>7.1f} {r['run_dirs']:>4}  {verdict}")
        if not nv and new_text is not None and codes[name] < 2:
            print("   migrated output:", r["new_tail"].replace("\n", " | ")[-300:])
    print("\n" + ", ".join(f"{v}: {n}" for v, n in sorted(tally.items())))


def _failing_line_has_todo(name: str, text: str, output: str) -> bool:
    import libcst as cst
    from libcst.metadata import MetadataWrapper

    from unified.migrate.verify import _has_todo, _statements, statement_at

    lines = [int(n) for f, n in re.findall(r'File "([^"]+)", line (\d+)', output) if Path(f).name == name]
    if not lines:
        return False
    stmt = statement_at(_statements(MetadataWrapper(cst.parse_module(text))), lines[-1])
    return stmt is not None and _has_todo(stmt)


if __name__ == "__main__":
    main()
