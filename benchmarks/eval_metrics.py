"""Streaming evaluation speed: ``EvalAccumulator`` over a large validation pass (numpy only, no framework).

Run:  python benchmarks/eval_metrics.py [--rows N] [--classes C] [--batch B] [--repeats R] [--json OUT]

The workload ``tests/unified/test_metrics.py`` checks for correctness and bounded state: ``--rows`` samples
(default 200,000) of ``--classes`` float32 logits (default 10) with random integer targets, streamed in
``--batch``-row batches (default 1000) into one accumulator with the metrics accuracy, f1_macro,
precision_macro and recall_macro, then ``compute()``. Each repeat times ``reset()`` + every ``update()`` +
``compute()`` with ``time.perf_counter``; the median and the fastest of ``--repeats`` (default 7) are reported,
with rows per second. Data generation and metric construction are outside the timed window.

For scale: before these numbers moved here, the test suite asserted the default workload took < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # a checkout works without installing

METRICS = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="samples in the evaluation pass (default 200000)")
    ap.add_argument("--classes", type=int, default=10, help="classes (default 10)")
    ap.add_argument("--batch", type=int, default=1000, help="rows per update() (default 1000)")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes (default 7)")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    args = ap.parse_args(argv)
    if min(args.rows, args.classes - 1, args.batch, args.repeats) < 1:
        ap.error("--rows, --batch and --repeats must be >= 1 and --classes >= 2")

    import numpy as np

    from unified.metrics import EvalAccumulator, build_metrics
    from unified.spec import Spec

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.rows, args.classes)).astype(np.float32)
    targets = rng.integers(0, args.classes, size=args.rows)
    spec = Spec.from_dict({"task": "classification", "data": {"source": "sklearn:iris"}, "metrics": METRICS})
    acc = EvalAccumulator(build_metrics(spec, args.classes), "val")

    def one_pass() -> float:
        t0 = time.perf_counter()
        acc.reset()
        for i in range(0, args.rows, args.batch):
            acc.update(logits[i:i + args.batch], targets[i:i + args.batch], 0.0, len(targets[i:i + args.batch]))
        acc.compute()
        return time.perf_counter() - t0

    one_pass()  # warm-up (first-call allocations), not counted
    runs = [one_pass() for _ in range(args.repeats)]
    med, best = statistics.median(runs), min(runs)
    batches = -(-args.rows // args.batch)

    print(f"EvalAccumulator, {args.rows} rows x {args.classes} classes in {batches} batches of {args.batch}, "
          f"metrics {', '.join(METRICS)}; median of {args.repeats}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs.")
    print()
    print("| median s | fastest s | rows/s (median) | us per update (median) |")
    print("|---:|---:|---:|---:|")
    print(f"| {med:.3f} | {best:.3f} | {args.rows / med:,.0f} | {1e6 * med / batches:.1f} |")

    if args.json:
        out = {"python": platform.python_version(), "numpy": np.__version__, "rows": args.rows,
               "classes": args.classes, "batch": args.batch, "metrics": METRICS, "repeats": args.repeats,
               "median_s": med, "fastest_s": best, "runs_s": runs, "rows_per_s": args.rows / med}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
