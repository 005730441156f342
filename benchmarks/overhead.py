"""Facade overhead: ``UnifiedTrainer`` vs the same work written directly against each native trainer.

Run:  python benchmarks/overhead.py [--repeats N] [--epochs E] [--backends lightning,ignite] [--json OUT]
      (from a checkout or with the project installed; needs the lightning and ignite extras)

Task (identical on every side): sklearn digits, standardized (the facade's own split: 80/20 train/val,
seed 0 -- 1438 train / 359 val samples, 45 steps per epoch), MLP 64-128-10 with ReLU, Adam lr 1e-3,
batch 32, validation (loss + accuracy) on the val split after every epoch, no progress bars, no checkpoints.

* native Lightning: a plain ``pl.LightningModule`` (``training_step`` returns the loss, ``validation_step``
  computes loss + accuracy and ``self.log``s them, ``configure_optimizers``) fitted by
  ``pl.Trainer(accelerator="cpu", devices=1, max_epochs=E, logger=False, enable_progress_bar=False,
  enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)`` on
  ``DataLoader(TensorDataset(...), batch_size=32, shuffle=True)`` -- what a Lightning user writes.
* native Ignite: ``create_supervised_trainer`` + ``create_supervised_evaluator`` with ``Accuracy``/``Loss``,
  the evaluator run on ``EPOCH_COMPLETED``, the same loaders -- what an Ignite user writes.
* facade: ``UnifiedTrainer(spec, backend=..., run_dir=tmp)`` with ``trainer.progress_bar: false``,
  ``metrics: [accuracy]`` (the native sides compute accuracy only; the default would add f1_macro), no
  callbacks of the spec, every other key at its default (``log_every_n_steps: 10`` -> a metrics.csv row
  every 10 steps, ``deterministic: true``). The only extra object is a CPU-time probe (``CpuProbe``) that
  overrides ``on_fit_start``/``on_fit_end`` only, which the facade never calls per step.
* native-lean (diagnostic, ``--no-diagnostic`` skips it): the same native code with two changes a
  performance-minded user could make, to isolate the facade's own per-step cost from what it does
  differently: batches fetched whole (``BatchSampler`` + one ``TensorDataset[indices]`` per batch, as the
  facade's loader does, instead of 32 ``__getitem__`` + ``default_collate``) and, on Lightning, validation
  sums kept in the module and ``self.log``-ged once per epoch instead of twice per batch.
* plain torch (context only): a hand-written loop, tensor slicing for batches, same validation.

The timed window (the fairest one both sides share):
    The facade's ``result.train_time_s`` runs from the native trainer's *train start* hook to its
    *train end* hook (Lightning ``on_train_start`` -> ``on_train_end``; Ignite ``Events.STARTED`` ->
    ``Events.COMPLETED``), see unified/events.py ``fit_start``/``fit_end``. Timing native
    ``trainer.fit()`` would add Lightning's setup (strategy/accelerator setup, dataloader checks, the fit
    loop's ``setup_data``) that runs *before* ``on_train_start`` and is excluded from the facade's figure.
    So the native runs are timed over the very same hook window: the native LightningModule overrides its
    own ``on_train_start``/``on_train_end`` (hooks Lightning calls anyway: no callback is added, so no
    extra per-step callback dispatch), the native Ignite trainer gets one ``STARTED`` and one
    ``COMPLETED`` handler (each fires once). The window holds every training step and every per-epoch
    validation; per-step time = window / optimizer steps. Whole ``fit()``/``run()`` times are recorded
    too, to show what the window leaves out (here: ~5 ms of Lightning setup; the facade's data loading,
    spec resolution, run directory and summary.json).

Method: per backend, rounds of one run of every side (order rotated per round, F N L / N L F / ...);
one warm-up round discarded; medians of ``--repeats`` rounds. The table's ratio is median(facade) /
median(native); the per-round paired ratio, the ratio of the fastest runs and the CPU-time ratio
(``time.thread_time`` over the same window) are printed as cross-checks. ``torch.set_num_threads(1)``;
``gc.collect()`` before every run; torch's global deterministic-algorithms flag (which the facade turns on
by default) is restored after every run so it never leaks into the next one.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
try:  # installed (pip install -e .) or run from a checkout
    import unified  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT))

from unified.callbacks import Callback  # noqa: E402 - numpy only, no framework

SEED = 0
BATCH = 32
LR = 1e-3
HIDDEN = 128


def spec_dict(epochs: int) -> dict[str, Any]:
    return {
        "name": "overhead-digits",
        "seed": SEED,
        "task": "classification",
        "data": {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2, "batch_size": BATCH,
                 "shuffle": True},
        "model": {"arch": "mlp", "hidden": [HIDDEN], "activation": "relu"},
        "optimizer": {"name": "adam", "lr": LR},
        "metrics": ["accuracy"],
        "trainer": {"max_epochs": epochs, "progress_bar": False},
        "callbacks": [],
    }


def load_arrays(epochs: int) -> dict[str, np.ndarray]:
    """The facade's own split and standardization (numpy only), so every side trains on the same data."""
    from unified.data import load_dataset
    from unified.spec import load_spec

    ds = load_dataset(load_spec(spec_dict(epochs)))
    assert ds.val is not None
    return {"x_train": np.ascontiguousarray(ds.train.x, dtype=np.float32), "y_train": ds.train.y.astype(np.int64),
            "x_val": np.ascontiguousarray(ds.val.x, dtype=np.float32), "y_val": ds.val.y.astype(np.int64)}


# -- the native sides ------------------------------------------------------------------------------------

def _tensors(arrays: dict[str, np.ndarray]) -> tuple[Any, Any, Any, Any]:
    import torch

    return (torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]),
            torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))


def _loaders(arrays: dict[str, np.ndarray], batched: bool = False) -> tuple[Any, Any]:
    """The loaders a user writes: ``DataLoader(TensorDataset, batch_size=32, shuffle=True)`` (32 ``__getitem__``
    calls + ``default_collate`` per batch). ``batched=True`` (diagnostic): one ``TensorDataset[index list]`` per
    batch through a ``BatchSampler`` -- the way the facade's own loader fetches batches."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

    xt, yt, xv, yv = _tensors(arrays)
    train, val = TensorDataset(xt, yt), TensorDataset(xv, yv)
    if batched:
        return (DataLoader(train, sampler=BatchSampler(RandomSampler(train), BATCH, False), batch_size=None),
                DataLoader(val, sampler=BatchSampler(SequentialSampler(val), BATCH, False), batch_size=None))
    return DataLoader(train, batch_size=BATCH, shuffle=True), DataLoader(val, batch_size=BATCH)


def _mlp(n_in: int, n_out: int) -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_out))


def run_native_lightning(arrays: dict[str, np.ndarray], epochs: int, lean: bool = False) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch
    from torch.nn import functional as F

    class DigitsModule(pl.LightningModule):
        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.net = _mlp(n_in, n_out)
            self.t_start = self.t_end = float("nan")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            if not lean:  # what a Lightning user writes: self.log per batch, Lightning averages over the epoch
                self.log("val_loss", F.cross_entropy(logits, y), batch_size=len(y))
                self.log("val_acc", (logits.argmax(-1) == y).float().mean(), batch_size=len(y))
                return
            # lean: sums in the module, one self.log per key and epoch (as cheap as Lightning logging gets)
            self.val_sums.append(torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                              (logits.argmax(-1) == y).sum().float()]))

        def on_validation_epoch_start(self) -> None:
            self.val_sums = []

        def on_validation_epoch_end(self) -> None:
            if lean:
                n = len(arrays["y_val"])
                loss_sum, correct = torch.stack(self.val_sums).sum(0)
                self.log("val_loss", loss_sum / n)
                self.log("val_acc", correct / n)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=LR)

        # the timing window (see the module docstring); Lightning calls these hooks in any case
        def on_train_start(self) -> None:
            self.t_start, self.c_start = time.perf_counter(), time.thread_time()

        def on_train_end(self) -> None:
            self.t_end, self.c_end = time.perf_counter(), time.thread_time()

    train_dl, val_dl = _loaders(arrays, batched=lean)
    module = DigitsModule(arrays["x_train"].shape[1], int(arrays["y_train"].max()) + 1)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl)
        t1 = time.perf_counter()
    return {"window_s": module.t_end - module.t_start, "cpu_s": module.c_end - module.c_start,
            "call_s": t1 - t0, "steps": int(trainer.global_step),
            "val_acc": float(trainer.callback_metrics["val_acc"])}


def run_native_ignite(arrays: dict[str, np.ndarray], epochs: int, lean: bool = False) -> dict[str, float]:
    import torch
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from ignite.metrics import Accuracy, Loss
    from torch import nn

    train_dl, val_dl = _loaders(arrays, batched=lean)
    model = _mlp(arrays["x_train"].shape[1], int(arrays["y_train"].max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    trainer = create_supervised_trainer(model, optimizer, criterion)
    evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(criterion)})

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Any) -> None:
        evaluator.run(val_dl)

    marks: dict[str, float] = {}  # the timing window (see the module docstring)
    trainer.add_event_handler(Events.STARTED, lambda e: marks.update(start=time.perf_counter(), c0=time.thread_time()))
    trainer.add_event_handler(Events.COMPLETED, lambda e: marks.update(end=time.perf_counter(), c1=time.thread_time()))

    t0 = time.perf_counter()
    trainer.run(train_dl, max_epochs=epochs)
    t1 = time.perf_counter()
    return {"window_s": marks["end"] - marks["start"], "cpu_s": marks["c1"] - marks["c0"], "call_s": t1 - t0,
            "steps": int(trainer.state.iteration),
            "val_acc": float(evaluator.state.metrics["accuracy"])}


def run_plain_torch(arrays: dict[str, np.ndarray], epochs: int) -> dict[str, float]:
    """Context: a hand-written loop, no trainer at all (batches by tensor slicing of a permutation)."""
    import torch
    from torch.nn import functional as F

    xt, yt, xv, yv = _tensors(arrays)
    model = _mlp(xt.shape[1], int(yt.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    n, steps, acc = len(xt), 0, float("nan")
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        correct, total_loss = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(xv), BATCH):
                out = model(xv[i:i + BATCH])
                total_loss += float(F.cross_entropy(out, yv[i:i + BATCH], reduction="sum"))
                correct += int((out.argmax(-1) == yv[i:i + BATCH]).sum())
        acc = correct / len(xv)
    t1, c1 = time.perf_counter(), time.thread_time()
    return {"window_s": t1 - t0, "cpu_s": c1 - c0, "call_s": t1 - t0, "steps": steps, "val_acc": acc}


# -- the facade ------------------------------------------------------------------------------------------

class CpuProbe(Callback):
    """CPU time over the facade's own window. It overrides ``on_fit_start`` / ``on_fit_end`` only, and
    ``RunEvents`` dispatches a hook only to callbacks that override it (unified/events.py, ``_by_hook``), so
    it adds no per-step work: the facade still runs no per-batch callback at all."""

    c0 = c1 = float("nan")

    def on_fit_start(self, state: Any) -> None:
        self.c0 = time.thread_time()

    def on_fit_end(self, state: Any) -> None:
        self.c1 = time.thread_time()


def make_facade_runner(backend: str, workdir: Path) -> Callable[[dict[str, np.ndarray], int], dict[str, float]]:
    counter = {"n": 0}

    def run(arrays: dict[str, np.ndarray], epochs: int) -> dict[str, float]:
        from unified import UnifiedTrainer

        counter["n"] += 1
        probe = CpuProbe()
        trainer = UnifiedTrainer(spec_dict(epochs), backend=backend, run_dir=workdir / f"{backend}-{counter['n']}",
                                 callbacks=[probe])
        t0 = time.perf_counter()
        result = trainer.fit()
        t1 = time.perf_counter()
        return {"window_s": result.train_time_s, "cpu_s": probe.c1 - probe.c0, "call_s": t1 - t0,
                "steps": int(result.global_step),
                "val_acc": float(result.metrics["val/accuracy"])}

    return run


# -- harness ---------------------------------------------------------------------------------------------

def _timed(fn: Callable[[dict[str, np.ndarray], int], dict[str, float]], arrays: dict[str, np.ndarray],
           epochs: int) -> dict[str, float]:
    import torch

    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    gc.collect()
    try:
        out = fn(arrays, epochs)
    finally:
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
    out["ms_per_step"] = 1000.0 * out["window_s"] / out["steps"]
    out["cpu_ms_per_step"] = 1000.0 * out["cpu_s"] / out["steps"]
    return out


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _spread(runs: list[dict[str, float]], key: str = "ms_per_step") -> tuple[float, float]:
    vals = [r[key] for r in runs]
    return min(vals), max(vals)


NATIVE = {"lightning": run_native_lightning, "ignite": run_native_ignite}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="measured runs per side and backend (default 7)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    ap.add_argument("--backends", default="lightning,ignite", help="comma-separated (default lightning,ignite)")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    ap.add_argument("--no-diagnostic", action="store_true",
                    help="skip the diagnostic third side (native code with a batch-at-once loader)")
    ap.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in NATIVE:
            ap.error(f"--backends: unknown backend {b!r}; expected a subset of {','.join(NATIVE)}")
    if not backends:
        ap.error("--backends: name at least one backend")
    if args.repeats < 1 or args.epochs < 1:
        ap.error("--repeats and --epochs must be >= 1")

    import torch

    torch.set_num_threads(1)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # the facade does the same; setup-time chatter only
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # torch 2.13 deprecates LeafSpec(); Lightning's CombinedLoader builds one per loader set-up (not per step)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")

    arrays = load_arrays(args.epochs)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"# torch.set_num_threads(1) (torch.get_num_threads() = {torch.get_num_threads()}); {args.epochs} epochs x "
        f"{len(arrays['x_train'])} train / {len(arrays['x_val'])} val samples, batch {BATCH}; 1 warm-up round + "
        f"{args.repeats} measured rounds per backend, each round runs every side once (order rotated per round)")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="unified-overhead-") as tmp:
        for backend in backends:
            native = NATIVE[backend]
            sides: list[tuple[str, Callable[[dict[str, np.ndarray], int], dict[str, float]]]] = [
                ("facade", make_facade_runner(backend, Path(tmp))),
                ("native", native),
            ]
            if not args.no_diagnostic:
                sides.append(("native-lean", lambda a, e, _f=native: _f(a, e, lean=True)))
            runs: dict[str, list[dict[str, float]]] = {side: [] for side, _ in sides}
            for i in range(args.repeats + 1):
                k = i % len(sides)
                for side, fn in sides[k:] + sides[:k]:  # F N L, N L F, L F N, ...: no side always goes first
                    r = _timed(fn, arrays, args.epochs)
                    tag = "warm-up" if i == 0 else f"round {i}"
                    log(f"  {backend:9s} {side:11s} {tag:8s} {r['ms_per_step']:.3f} ms/step (CPU "
                        f"{r['cpu_ms_per_step']:.3f}), {r['steps']} steps, window {r['window_s']:.3f}s, "
                        f"whole call {r['call_s']:.3f}s, val acc {r['val_acc']:.3f}")
                    if i > 0:
                        runs[side].append(r)
            steps = {side: sorted({int(r["steps"]) for r in rs}) for side, rs in runs.items()}
            if len({tuple(v) for v in steps.values()}) != 1:
                raise SystemExit(f"{backend}: step counts differ between sides {steps}; the comparison is void")
            res: dict[str, Any] = {"steps": int(runs["facade"][0]["steps"])}
            for side, rs in runs.items():
                key = side.replace("-", "_")
                res[key] = {
                    "ms_per_step": _median(rs, "ms_per_step"), "ms_per_step_min_max": _spread(rs),
                    "cpu_ms_per_step": _median(rs, "cpu_ms_per_step"),
                    "window_s": _median(rs, "window_s"), "call_s": _median(rs, "call_s"),
                }
            for other in [side for side in runs if side != "facade"]:
                key = other.replace("-", "_")
                res[f"ratio_vs_{key}"] = {
                    # the table's ratio: median facade / median native
                    "of_medians": res["facade"]["ms_per_step"] / res[key]["ms_per_step"],
                    # median over rounds of facade / native from the same round (cancels slow drifts of load)
                    "paired": statistics.median(f["ms_per_step"] / n["ms_per_step"]
                                                for f, n in zip(runs["facade"], runs[other])),
                    "cpu_of_medians": res["facade"]["cpu_ms_per_step"] / res[key]["cpu_ms_per_step"],
                    # fastest facade / fastest native: the least disturbed runs of each
                    "of_minimums": res["facade"]["ms_per_step_min_max"][0] / res[key]["ms_per_step_min_max"][0],
                }
            res["runs"] = runs
            results[backend] = res
        plain_runs = [_timed(run_plain_torch, arrays, args.epochs) for _ in range(args.repeats + 1)][1:]
        plain = {"ms_per_step": _median(plain_runs, "ms_per_step"), "ms_per_step_min_max": _spread(plain_runs),
                 "cpu_ms_per_step": _median(plain_runs, "cpu_ms_per_step"), "steps": int(plain_runs[0]["steps"]),
                 "runs": plain_runs}

    import ignite
    import pytorch_lightning

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "pytorch_lightning": pytorch_lightning.__version__, "ignite": ignite.__version__,
           "numpy": np.__version__, "torch_num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "epochs": args.epochs, "repeats": args.repeats, "batch_size": BATCH,
           "train_samples": len(arrays["x_train"]), "val_samples": len(arrays["x_val"])}

    steps = results[backends[0]]["steps"]
    print(f"Facade overhead: digits MLP [{HIDDEN}] relu, Adam lr {LR:g}, batch {BATCH}, {args.epochs} epochs "
          f"({steps} optimizer steps), validation every epoch, progress bars off.")
    print(f"torch.set_num_threads(1). Median of {args.repeats} runs per side, facade and native runs alternating, "
          f"1 warm-up round discarded. ms/step = (train-start hook -> train-end hook) / optimizer steps: the same "
          f"window on both sides (the facade's result.train_time_s).")
    print(f"torch {torch.__version__}, pytorch-lightning {pytorch_lightning.__version__}, pytorch-ignite "
          f"{ignite.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs.")
    print()
    print("| backend | native ms/step | facade ms/step | ratio |")
    print("|---|---:|---:|---:|")
    for b in backends:
        r = results[b]
        print(f"| {b} | {r['native']['ms_per_step']:.3f} | {r['facade']['ms_per_step']:.3f} | "
              f"{r['ratio_vs_native']['of_medians']:.2f} |")
    print()
    print(f"Plain torch loop, no trainer (context): {plain['ms_per_step']:.3f} ms/step.")
    for b in backends:
        r = results[b]
        rn = r["ratio_vs_native"]
        line = (f"{b}: ratio paired per round {rn['paired']:.2f}, of the fastest runs {rn['of_minimums']:.2f}, "
                f"in CPU time {rn['cpu_of_medians']:.2f}; "
                f"min-max ms/step native {r['native']['ms_per_step_min_max'][0]:.3f}-"
                f"{r['native']['ms_per_step_min_max'][1]:.3f}, facade {r['facade']['ms_per_step_min_max'][0]:.3f}-"
                f"{r['facade']['ms_per_step_min_max'][1]:.3f}.")
        if "native_lean" in r:
            rl = r["ratio_vs_native_lean"]
            line += (f" Diagnostic native-lean (batch-at-once loader like the facade's"
                     f"{', val metrics logged once per epoch' if b == 'lightning' else ''}): "
                     f"{r['native_lean']['ms_per_step']:.3f} ms/step, facade/lean {rl['of_medians']:.2f} "
                     f"(paired {rl['paired']:.2f}, fastest {rl['of_minimums']:.2f}, CPU {rl['cpu_of_medians']:.2f}).")
        line += (f" Whole call: native {r['native']['call_s']:.3f}s (window {r['native']['window_s']:.3f}s), "
                 f"facade fit() {r['facade']['call_s']:.3f}s (window {r['facade']['window_s']:.3f}s).")
        print(line)

    if args.json:
        out = {"env": env, "window": "train-start hook -> train-end hook (facade: result.train_time_s)",
               "backends": results, "plain_torch": plain}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
