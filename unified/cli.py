"""The ``unified`` command.

Exit codes: 0 success; 2 bad input (spec, path, argument) with one line on stderr and no traceback
(unless ``--debug``); 1 a training failure (the run directory says ``status: failed``); 130 interrupted by
SIGINT (Ctrl-C), 143 by SIGTERM (a checkpoint is saved first; ``--resume RUN_DIR`` continues).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

from unified.registry import KERAS_TENSOR_BACKENDS
from unified.errors import BackendUnavailableError, NotSupportedError, SpecError, TrainingError, VerificationError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    usage_exit = EXIT_BAD_INPUT  # `unified migrate` has its own table: 3 for a usage error

    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code), no usage dump
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the experiment spec (YAML or TOML)")
    p.add_argument("--backend", help="training backend (see `unified backends`)")
    p.add_argument("--keras-backend", choices=KERAS_TENSOR_BACKENDS, help="Keras tensor backend")
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
    run.add_argument("--resume", metavar="RUN_DIR|CHECKPOINT",
                     help="continue exactly where a run stopped: a run directory (continued in place; its backend "
                          "unless --backend) or a native checkpoint (a new run directory); a portable .npz loads "
                          "weights only")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (same as trainer.progress_bar=false)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    val = sub.add_parser("validate", help="check a spec, its data and its imports without training")
    _common(val)
    val.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    cmp = sub.add_parser("compare", help="train a spec on several backends, each in its own process, and compare")
    cmp.add_argument("spec", help="the experiment spec (YAML or TOML)")
    cmp.add_argument("--backends", metavar="B1,B2,...",
                     help="comma-separated backends, e.g. lightning,ignite,keras-torch,keras-jax (default: every "
                          "installed one; Keras once per installed tensor backend, as keras-<tensor backend>)")
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

    mg = sub.add_parser("migrate", help="rewrite Lightning / Ignite / Keras training code onto UnifiedTrainer",
                        description="Exit codes: 0 nothing to change, 1 changes made or proposed, 2 manual items "
                                    "remain, 3 usage error. Dry run (a unified diff) unless --write.")
    mg.usage_exit = 3
    mg.add_argument("path", metavar="PATH", help="a Python file or a directory tree")
    mg.add_argument("--write", action="store_true", help="rewrite the files in place (atomically)")
    mg.add_argument("--spec-out", metavar="FILE", help="also write the extracted experiment spec(s) as YAML")
    mg.add_argument("--report", choices=("text", "json"), default="text",
                    help="text: diff on stdout, table on stderr; json: one JSON document on stdout")
    mg.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    _add_export_parsers(sub)

    bk = sub.add_parser("backends", help="installed backends, versions and features")
    bk.add_argument("--json", action="store_true", help="machine-readable output")
    bk.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_export_parsers(sub: Any) -> None:
    ex = sub.add_parser("export", help="export a finished run's model (onnx, torchscript, savedmodel, keras, tflite)")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (spec.yaml, summary.json, checkpoints/)")
    ex.add_argument("--format", dest="formats", metavar="F1,F2,...",
                    help="onnx, torchscript, savedmodel, keras, tflite (default: the spec's export.formats, else onnx)")
    ex.add_argument("--out", metavar="DIR", help="export directory (default: RUN_DIR/export; replaced as a whole)")
    ex.add_argument("--weights", metavar="final|last|best|FILE.npz",
                    help="which weights (default: final, the weights the run ended with; else last, best)")
    ex.add_argument("--tolerance", type=float, metavar="T", help="max abs output difference (default: export.tolerance)")
    ex.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                    help="do not reload and compare the artifacts")
    ex.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sv = sub.add_parser("serve", help="serve an exported model over HTTP (/predict, Open Inference Protocol v2, "
                                      "TensorFlow Serving REST, /metrics)")
    sv.add_argument("artifact", metavar="ARTIFACT", help="an export directory (manifest.json), a run directory or a .onnx file")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--format", dest="fmt", metavar="F",
                    help="which artifact of the manifest to serve (default: onnx, else the first one)")
    sv.add_argument("--max-rows", type=int, default=10000, help="most rows per request (default 10000)")
    sv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                    help="largest request body in bytes (default 16 MiB)")
    sv.add_argument("--model-name", metavar="NAME",
                    help="the model's name in /v2/models/NAME and /v1/models/NAME (default: the spec's name)")
    sv.add_argument("--max-batch-size", type=int, default=64, metavar="ROWS",
                    help="most rows gathered from concurrent requests into one runtime call; 1 turns batching "
                         "off (default 64)")
    sv.add_argument("--batch-timeout-ms", type=float, default=2.0, metavar="MS",
                    help="longest wait for more concurrent requests to gather (default 2)")
    sv.add_argument("--log-format", choices=["none", "text", "json"], default="none",
                    help="one access-log line per request on stderr (default none)")
    sv.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


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


def _backend_of_run(args: argparse.Namespace) -> None:
    """``--resume RUN_DIR`` without ``--backend``: resume on the backend (and Keras backend) the run used."""
    import yaml

    spec_file = os.path.join(args.resume, "spec.yaml")
    if args.backend or not os.path.isfile(spec_file):
        return
    try:
        with open(spec_file, encoding="utf-8") as f:
            prev = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return
    if isinstance(prev, dict) and prev.get("backend"):
        args.backend = prev["backend"]
        if prev.get("keras_backend") and not args.keras_backend:  # the variant the run used (Keras only)
            args.keras_backend = prev["keras_backend"]


def cmd_run(args: argparse.Namespace) -> int:
    from unified.trainer import UnifiedTrainer

    if args.resume:
        _backend_of_run(args)
    trainer = UnifiedTrainer(args.spec, backend=args.backend, run_dir=args.run_dir, overrides=_overrides(args))
    try:
        result = trainer.fit(resume=args.resume)
    except KeyboardInterrupt as e:
        _err(f"{e or 'interrupted'}; run directory: {trainer.run_dir} (continue with --resume {trainer.run_dir})")
        return 128 + getattr(e, "signum", 2)  # 130 SIGINT, 143 SIGTERM
    world = getattr(trainer, "world", None)
    if world is not None and not world.is_zero:  # rank > 0 of a multi-process run: rank 0 reports
        return EXIT_OK
    shown = {k: v for k, v in result.metrics.items() if k.startswith(("val/", "test/"))}
    print(f"run directory: {result.run_dir}")
    if result.summary.get("mlflow"):
        ml = result.summary["mlflow"]
        print(f"mlflow: run {ml['run_id']} in experiment {ml['experiment']!r} at {ml['tracking_uri']}")
    print(f"status: {result.status}  epochs: {result.epochs}  steps: {result.global_step}  "
          f"train time: {result.train_time_s:.2f}s")
    if shown:
        print("  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if trainer.spec.export.formats:
        print(f"export: {result.run_dir / 'export'} ({', '.join(trainer.spec.export.formats)}, manifest.json)")
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
        if spec.export.formats:
            from unified.export import check_formats

            check_formats(load_adapter(trainer.backend), spec, list(spec.export.formats), verify=spec.export.verify)
        load_adapter(trainer.backend).check_spec(spec)
    else:
        notes.append(f"backend {trainer.backend!r} is not installed here ({entry.install_hint})")
    dataset = load_dataset(spec, trainer.base_dir)
    metrics = build_metrics(spec, dataset.num_classes, trainer.base_dir)
    check_monitors(spec, [m.name for m in metrics])
    if spec.model.arch is not None:
        build_plan(spec, dataset.sample_shape, dataset.out_features, dataset.input_dtype)
    else:
        import_target(spec.model.factory, "model.factory", trainer.base_dir)
    build_callbacks(spec, trainer.base_dir)
    if len(spec.logging.loggers) > 1:  # tensorboard / mlflow: the package is there, the MLflow store answers
        from unified.loggers import RunLoggers

        RunLoggers(spec, []).connect()
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
    from unified.adapters.base import FEATURE_CHECKS
    from unified.devices import describe as describe_devices, devices_line
    from unified.registry import available_backends, load_adapter

    rows = []
    for name, entry in available_backends().items():
        row: dict[str, Any] = {"name": name, "installed": entry.is_installed(), "install": entry.install_hint}
        if row["installed"]:
            try:
                cls = load_adapter(name)
                row["versions"] = cls.versions()
                have = cls.features | {f"export:{f}" for f in getattr(cls, "export_formats", ())}
                row["features"] = sorted(have)
                row["not_yet"] = sorted(f for f in FEATURE_CHECKS if f not in have)
                row.update(describe_devices(cls, entry))  # accelerators, and the devices its framework sees
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
            print(f"{'':<10} devices:   {devices_line(row)} (trainer.accelerator: {', '.join(row['accelerators'])})")
            if row["not_yet"]:
                print(f"{'':<10} not yet:   {', '.join(row['not_yet'])}")
        else:
            print(f"{row['name']:<10} missing    {row['install']}")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from unified.migrate import EXIT_USAGE, migrate

    if not os.path.exists(args.path):
        _err(f"{args.path}: no such file or directory")
        return EXIT_USAGE
    if args.spec_out and os.path.isdir(args.spec_out):
        _err(f"--spec-out {args.spec_out}: is a directory; expected a file name")
        return EXIT_USAGE
    from unified.migrate.engine import specs_yaml, unified_diff

    result = migrate(args.path, write=args.write)
    diff = "" if args.write else unified_diff(result)
    notes = []
    if args.spec_out:
        from unified.files import atomic_write_text

        if any(fr.specs for fr in result.files):
            text, dropped = specs_yaml(result)
            if dropped:
                text = "".join(f"# left out (an expression of the script): {d}\n" for d in dropped) + text
            atomic_write_text(args.spec_out, text)
            notes.append(f"spec written: {args.spec_out}")
        else:
            notes.append(f"no training setup found: {args.spec_out} not written")
    if args.report == "json":
        doc = json.loads(result.to_json())
        doc["diff"] = diff
        doc["notes"] = notes
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(diff)
        sys.stderr.write(result.to_text())
        for note in notes:
            sys.stderr.write(note + "\n")
    return result.exit_code()


def cmd_export(args: argparse.Namespace) -> int:
    from unified.export import export_run_dir

    manifest = export_run_dir(args.run_dir, args.formats, out=args.out, weights=args.weights, verify=args.verify,
                              tolerance=args.tolerance)
    out = args.out or os.path.join(args.run_dir, "export")
    for a in manifest["artifacts"]:
        v = a["verification"]
        check = (f"verified in {a['runtime']}: max |diff| {v['max_abs_diff']:.3g} <= {v['tolerance']:g}"
                 if v.get("verified") else "not verified")
        print(f"{a['format']:<12} {os.path.join(out, a['path'])}  ({check})")
    print(f"manifest: {os.path.join(out, 'manifest.json')}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from unified.serve import serve

    serve(args.artifact, host=args.host, port=args.port, fmt=args.fmt, max_rows=args.max_rows,
          max_body_bytes=args.max_body_bytes, model_name=args.model_name, max_batch_size=args.max_batch_size,
          batch_timeout_ms=args.batch_timeout_ms, log_format=args.log_format)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "export": cmd_export, "serve": cmd_serve,
    "migrate": cmd_migrate,
    "run": cmd_run, "validate": cmd_validate, "compare": cmd_compare, "backends": cmd_backends, "tune": cmd_tune,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if next((a for a in argv if not a.startswith("-")), None) == "migrate":
        parser.usage_exit = 3  # `unified migrate` has its own table: unrecognized arguments exit 3 too
    args = parser.parse_args(argv)
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
    except (TrainingError, VerificationError) as e:
        if args.debug:
            traceback.print_exc()
        _err(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        _err(str(e) or "interrupted")
        return 128 + getattr(e, "signum", 2)  # 130 SIGINT, 143 SIGTERM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
