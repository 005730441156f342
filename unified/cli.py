"""The ``unified`` command.

Exit codes: 0 success; 2 bad input (spec, path, argument) with one line on stderr and no traceback
(unless ``--debug``); 1 a training failure (the run directory says ``status: failed``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

from unified.errors import BackendUnavailableError, NotSupportedError, SpecError, TrainingError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code), no usage dump
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the experiment spec (YAML or TOML)")
    p.add_argument("--backend", help="training backend (see `unified backends`)")
    p.add_argument("--keras-backend", choices=("tensorflow", "torch", "jax"), help="Keras tensor backend")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set trainer.max_epochs=5 (value parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unified", description="One experiment spec, any training backend.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="train a spec")
    _common(run)
    run.add_argument("--run-dir", help="write the run here (default: <logging.dir>/<name>/<backend>/<run_id>)")
    run.add_argument("--resume", metavar="RUN_DIR|CHECKPOINT", help="continue a run (not supported yet)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (same as trainer.progress_bar=false)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    val = sub.add_parser("validate", help="check a spec, its data and its imports without training")
    _common(val)
    val.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    cmp = sub.add_parser("compare", help="train a spec on several backends, each in its own process, and compare")
    cmp.add_argument("spec", help="the experiment spec (YAML or TOML)")
    cmp.add_argument("--backends", metavar="B1,B2,...",
                     help="comma-separated backends, e.g. lightning,ignite,keras-torch (default: every installed one)")
    cmp.add_argument("--out", metavar="DIR",
                     help="write the comparison here (default: <logging.dir>/<name>/compare/<timestamp>)")
    cmp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec value for every backend (value parsed as YAML)")
    cmp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    tn = sub.add_parser("tune", help="search the spec's tune.space with Optuna (each trial a normal run)")
    _common(tn)
    tn.add_argument("--n-trials", type=int, metavar="N", help="trials in the study (default: tune.n_trials)")
    tn.add_argument("--storage", metavar="URL",
                    help="Optuna RDB URL shared by all workers, e.g. postgresql://user:pw@host/db "
                         "(default: tune.storage, else sqlite:///<logging.dir>/<name>/tune.db)")
    tn.add_argument("--study-name", metavar="NAME", help="study name (default: tune.study_name, else the spec's name)")
    tn.add_argument("--workers", type=int, default=1, metavar="K", help="local worker processes sharing the storage")
    tn.add_argument("--out", metavar="DIR",
                    help="where best.yaml, history.png, trials.csv go (default: <logging.dir>/<name>/tune/<study>)")
    tn.add_argument("--worker-only", action="store_true", help="run queued trials, no final report (another machine)")
    tn.add_argument("--worker-tag", default="", help=argparse.SUPPRESS)
    tn.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    bk = sub.add_parser("backends", help="installed backends, versions and features")
    bk.add_argument("--json", action="store_true", help="machine-readable output")
    bk.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _err(msg: str) -> None:
    sys.stderr.write(f"unified: error: {msg}\n")


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    if getattr(args, "keras_backend", None):
        os.environ["KERAS_BACKEND"] = args.keras_backend  # before anything imports keras
        out.append(f"keras_backend={args.keras_backend}")
    if getattr(args, "no_progress", False):
        out.append("trainer.progress_bar=false")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from unified.trainer import UnifiedTrainer

    if args.resume:
        raise NotSupportedError("--resume: resuming a run is not supported yet")
    trainer = UnifiedTrainer(args.spec, backend=args.backend, run_dir=args.run_dir, overrides=_overrides(args))
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        _err(f"interrupted; run directory: {trainer.run_dir}")
        return EXIT_INTERRUPTED
    shown = {k: v for k, v in result.metrics.items() if k.startswith(("val/", "test/"))}
    print(f"run directory: {result.run_dir}")
    print(f"status: {result.status}  epochs: {result.epochs}  steps: {result.global_step}  "
          f"train time: {result.train_time_s:.2f}s")
    if shown:
        print("  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from unified.callbacks import build_callbacks
    from unified.data import load_dataset
    from unified.metrics import build_metrics
    from unified.models import build_plan, import_target
    from unified.registry import get_entry, load_adapter
    from unified.spec import check_monitors
    from unified.trainer import UnifiedTrainer

    trainer = UnifiedTrainer(args.spec, backend=args.backend, overrides=_overrides(args))
    spec = trainer.spec
    entry = get_entry(trainer.backend)
    notes = []
    if entry.is_installed():
        load_adapter(trainer.backend).check_spec(spec)
    else:
        notes.append(f"backend {trainer.backend!r} is not installed here ({entry.install_hint})")
    dataset = load_dataset(spec, trainer.base_dir)
    metrics = build_metrics(spec, dataset.num_classes, trainer.base_dir)
    check_monitors(spec, [m.name for m in metrics])
    if spec.model.arch is not None:
        build_plan(spec, dataset.in_features, dataset.out_features)
    else:
        import_target(spec.model.factory, "model.factory", trainer.base_dir)
    build_callbacks(spec, trainer.base_dir)
    sizes = ", ".join(f"{n} {len(s)}" for n in ("train", "val", "test") if (s := getattr(dataset, n)) is not None)
    print(f"{args.spec}: OK (backend {trainer.backend}, task {spec.task}, {dataset.in_features} features, "
          f"{sizes} samples)")
    for note in notes:
        print(f"note: {note}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from unified.compare import compare, markdown

    code, report = compare(args.spec, backends=args.backends, out=args.out, overrides=args.overrides)
    print(markdown(report), end="")
    out = report["out_dir"]
    written = [f for f in ("compare.json", "compare.md", "curves.png") if os.path.exists(os.path.join(out, f))]
    print(f"\nwritten: {out}: {', '.join(written)}")
    return code


def cmd_tune(args: argparse.Namespace) -> int:
    from unified.tune import tune

    result = tune(args.spec, args.backend, overrides=_overrides(args), n_trials=args.n_trials, storage=args.storage,
                  study_name=args.study_name, workers=args.workers, out=args.out, keras_backend=args.keras_backend,
                  worker_only=args.worker_only, tag=args.worker_tag)
    if result is None:  # --worker-only
        return EXIT_OK
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    print(f"study {result.study_name}: {counts}")
    if result.best is None:
        _err(f"no trial completed (see {result.out_dir / 'trials.csv'})")
        return EXIT_FAILED
    b = result.best
    params = "  ".join(f"{k}={v}" for k, v in b["params"].items())
    print(f"best trial {b['number']}: {result.metric}={b['value']:.6g}  [{params}]  {b['run_dir']}")
    print(f"written: {result.out_dir}: {', '.join(result.files)}")
    print(f"train it: unified run {result.out_dir / 'best.yaml'}")
    return EXIT_OK


def cmd_backends(args: argparse.Namespace) -> int:
    from adapters.base import FEATURE_CHECKS
    from unified.registry import available_backends, load_adapter

    rows = []
    for name, entry in available_backends().items():
        row: dict[str, Any] = {"name": name, "installed": entry.is_installed(), "install": entry.install_hint}
        if row["installed"]:
            try:
                cls = load_adapter(name)
                row["versions"] = cls.versions()
                row["features"] = sorted(cls.features)
                row["not_yet"] = sorted(f for f in FEATURE_CHECKS if f not in cls.features)
            except ImportError as e:
                row["installed"], row["error"] = False, str(e)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        if row["installed"]:
            versions = ", ".join(f"{k} {v}" for k, v in row["versions"].items())
            print(f"{row['name']:<10} installed  {versions}")
            print(f"{'':<10} features:  {', '.join(row['features'])}")
            if row["not_yet"]:
                print(f"{'':<10} not yet:   {', '.join(row['not_yet'])}")
        else:
            print(f"{row['name']:<10} missing    {row['install']}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "validate": cmd_validate, "compare": cmd_compare, "backends": cmd_backends, "tune": cmd_tune,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    spec_file = getattr(args, "spec", None)
    try:
        return COMMANDS[args.command](args)
    except SpecError as e:
        if args.debug:
            traceback.print_exc()
        _err(str(e.with_source(spec_file) if spec_file else e))
        return EXIT_BAD_INPUT
    except (NotSupportedError, BackendUnavailableError) as e:
        if args.debug:
            traceback.print_exc()
        _err(f"{spec_file}: {e}" if spec_file else str(e))
        return EXIT_BAD_INPUT
    except TrainingError as e:
        if args.debug:
            traceback.print_exc()
        _err(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
