"""The :class:`UnifiedTrainer` facade: one spec, any backend."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from unified.callbacks import Callback, ModelCheckpoint, build_callbacks
from unified.context import RunContext
from unified.errors import NotSupportedError, SpecError, TrainingError
from unified.events import RunEvents, TrainState
from unified.files import atomic_write_json
from unified.loggers import CsvLogger, RunLoggers
from unified.progress import ProgressDisplay
from unified.rundir import new_run_dir, prepare_run_dir
from unified.spec import MetricSpec, Spec, best_monitor, check_monitors, load_spec, logged_keys

__version__ = "0.1.0"


@dataclass
class FitResult:
    """What :meth:`UnifiedTrainer.fit` returns (the same fields as ``summary.json``).

    Attributes:
        status: ``completed``, ``stopped_early``, ``interrupted`` or ``failed``.
        metrics: the last value of every logged key, plus ``test/*`` when the spec has a test split.
        best: ``{"monitor", "value", "epoch"}`` of the monitored key.
        epochs: epochs run; global_step: optimizer steps taken.
        run_dir: the run directory.
        train_time_s: seconds inside the training loop.
        history: every epoch's value of every logged key, ``{"val/loss": [epoch 1, epoch 2, ...]}``.
    """

    status: str
    metrics: dict[str, float]
    best: Optional[dict[str, Any]]
    epochs: int
    global_step: int
    run_dir: Path
    train_time_s: float
    wall_time_s: float
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)


class _History(Callback):
    """Collects each epoch's end-of-epoch value of every logged key (``FitResult.history``)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def on_epoch_end(self, state: TrainState) -> None:
        for key, value in state.metrics.items():
            self.values.setdefault(key, []).append(value)


class _BestTracker(Callback):
    """Tracks the best value of one monitored key for ``summary.json``'s ``best``."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.value: Optional[float] = None
        self.epoch: Optional[int] = None

    def on_epoch_end(self, state: TrainState) -> None:
        v = state.metrics.get(self.monitor)
        if v is None or math.isnan(v):
            return
        if self.value is None or (v < self.value if self.mode == "min" else v > self.value):
            self.value, self.epoch = float(v), state.epoch
            state.best = self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "value": self.value, "epoch": self.epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.epoch = state.get("value"), state.get("epoch")


@dataclass
class _Run:
    """What one ``fit()`` call works with, gathered step by step."""

    model: Any
    dataset: Any
    loaders: dict[str, Any]
    metrics: list[Any]
    names: list[str]
    plan: Any
    callbacks: list[Callback]
    tracker: "_BestTracker"
    history: "_History"
    loop: Any  # unified.adapters.base.LoopPlan
    keys: list[str]
    run_dir: Path = Path()
    loggers: Any = None
    csv: Any = None
    progress: Any = None


def _is_arraylike(obj: Any) -> bool:
    return hasattr(obj, "__array__") or (isinstance(obj, list))


class UnifiedTrainer:
    """Train one experiment spec on any installed backend.

    Args:
        spec: a :class:`Spec`, a dict, or the path of a YAML/TOML spec file.
        backend: ``lightning``, ``ignite``, ... (default: the spec's, else the first installed).
        run_dir: write the run here instead of ``<logging.dir>/<name>/<backend>/<run_id>``.
        overrides: dotted-key overrides, ``{"trainer.max_epochs": 5}`` or ``["trainer.max_epochs=5"]``.
        callbacks: extra :class:`~unified.callbacks.Callback` objects, run after the spec's own.

    Example:
        >>> trainer = UnifiedTrainer("examples/digits.yaml", backend="lightning")
        >>> result = trainer.fit()
        >>> result.metrics["val/accuracy"]
    """

    def __init__(self, spec: Union[Spec, dict, str, os.PathLike], backend: Optional[str] = None, *,
                 run_dir: Optional[Union[str, os.PathLike]] = None,
                 overrides: Optional[Union[dict[str, Any], list[str]]] = None,
                 callbacks: Optional[list[Callback]] = None) -> None:
        from unified.registry import default_backend, get_entry

        self.spec_source = str(spec) if isinstance(spec, (str, os.PathLike)) else None
        self.base_dir = str(Path(self.spec_source).resolve().parent) if self.spec_source else None
        spec_obj = load_spec(spec, overrides)
        name = backend or spec_obj.backend or default_backend()
        self.entry = get_entry(name)  # unknown names list the available ones
        self.backend = name
        self.spec = spec_obj.resolved(backend=name, **self.entry.resolved_updates(spec_obj))
        self.extra_callbacks = list(callbacks or [])
        for cb in self.extra_callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected unified.callbacks.Callback objects, got {type(cb).__name__}")
        self._adapter: Any = None
        self._ctx: Optional[RunContext] = None
        self.run_dir: Optional[Path] = Path(run_dir) if run_dir is not None else None
        self.result: Optional[FitResult] = None

    # -- public API -----------------------------------------------------------------------------------
    def fit(self, model: Any = None, data: Any = None, *, resume: Optional[Union[str, os.PathLike]] = None) -> FitResult:
        """Train. Model and data come from the spec unless given here.

        Args:
            model: the user's own native model (a ``torch.nn.Module`` for the torch backends). Its
                initial weights are the user's; the built-in models' come from the seed.
            data: ``(x, y)`` arrays (split into train/val by the spec), ``((x, y), (x_val, y_val))``,
                ``{"train": (x, y), "val": (x, y), "test": (x, y)}``, or native loaders:
                a train loader, or ``(train_loader, val_loader)``.
            resume: continue a run exactly: a run directory (its newest of ``checkpoints/interrupted.ckpt``
                and ``checkpoints/last.ckpt``; the run continues in that directory) or a native checkpoint
                file of this backend (a new run directory, like Lightning's ``fit(ckpt_path=...)``). Weights,
                optimizer and scheduler state, epoch/step counters, the position in the batch order and the
                callbacks' state are restored. A portable ``.npz``/``.safetensors`` file (any backend's)
                loads weights only: the optimizer, counters and batch order start afresh.

        Returns:
            FitResult with the status, the last metrics, the best monitored value and the run directory.

        Raises:
            SpecError: bad spec or inputs (nothing is trained; no run directory is left behind).
            NotSupportedError: the backend cannot do what the spec asks.
            TrainingError: training failed; ``summary.json`` says ``status: failed``.
            Interrupted: SIGINT/SIGTERM (a ``KeyboardInterrupt``), after ``checkpoints/interrupted.ckpt`` and
                ``summary.json`` (``status: interrupted``) were written; ``fit(resume=run_dir)`` continues.
        """
        from unified.distributed import world_from_env

        wall_start = time.perf_counter()
        adapter_cls = self._check_backend()
        world = self._check_world(world_from_env(), adapter_cls)
        if world is None:  # trainer.devices > 1 on one machine: start the other ranks, train as rank 0
            return self._fit_launched(model, data, resume)
        self.world = world
        worker = not world.is_zero  # writes nothing that lasts: its run directory is a temporary one
        if worker:
            self.spec = _worker_spec(self.spec)
        run = self._prepare(model, data)
        resume_plan = self._resume_plan(resume, adapter_cls, run.loop.steps_per_epoch) if resume is not None else None
        adapter, events, state = self._open_run(run, adapter_cls, resume_plan, worker, wall_start)
        self._adapter = adapter
        error = self._train(adapter, events, state, run)
        return self._finish(run, adapter, adapter_cls, events, state, error, worker, wall_start)

    # -- the steps of a run ---------------------------------------------------------------------------------
    def _check_backend(self) -> type:
        """Load the adapter class and refuse, before anything runs, what the backend cannot do."""
        from unified.registry import load_adapter

        adapter_cls = load_adapter(self.backend)
        if self.spec.export.formats:  # refused up front, naming the formats this backend gives
            from unified.export import check_formats

            check_formats(adapter_cls, self.spec, list(self.spec.export.formats), verify=self.spec.export.verify)
        adapter_cls.check_spec(self.spec)
        return adapter_cls

    def _prepare(self, model: Any, data: Any) -> "_Run":
        """Data, metrics, the model plan, callbacks and the loop's arithmetic (nothing written yet)."""
        from unified.adapters.base import LoopPlan
        from unified.data import load_dataset
        from unified.metrics import build_metrics
        from unified.models import build_plan, import_target

        spec = self.spec
        dataset, loaders = (load_dataset(spec, self.base_dir), {}) if data is None else self._user_data(data)
        num_classes = dataset.num_classes if dataset is not None else None
        metrics = build_metrics(spec, num_classes, self.base_dir)
        names = [m.name for m in metrics]
        if any(isinstance(m, MetricSpec) for m in spec.resolved_metrics()):
            check_monitors(spec, names)
        plan = None
        if model is None:
            if dataset is None:
                raise SpecError("fit(data=<loaders>) needs fit(model=...) too: the built-in models need the "
                                "feature count, which native loaders do not tell", path="model")
            if spec.model.arch is not None:
                plan = build_plan(spec, dataset.sample_shape, dataset.out_features, dataset.input_dtype)
            else:
                import_target(spec.model.factory, "model.factory", self.base_dir)
        callbacks = build_callbacks(spec, self.base_dir) + self.extra_callbacks
        batches = dataset.steps_per_epoch() if dataset is not None else _len_or_none(loaders.get("train"))
        return _Run(model=model, dataset=dataset, loaders=loaders, metrics=metrics, names=names, plan=plan,
                    callbacks=callbacks, tracker=self._best_tracker(), history=_History(),
                    loop=LoopPlan.of(spec, batches), keys=logged_keys(spec, names))

    def _open_run(self, run: "_Run", adapter_cls: Any, resume_plan: Optional[dict[str, Any]], worker: bool,
                  wall_start: float) -> tuple[Any, RunEvents, TrainState]:
        """Create the run directory and its files, the events, the context and the adapter.

        A bad input found here removes the run directory it created; nothing is left half-written.
        """
        spec = self.spec
        self._summary_extra: dict[str, Any] = {}
        loggers = RunLoggers(spec, run.keys).connect()  # a bad tracking URI fails here
        run.loggers = loggers
        in_place = resume_plan is not None and resume_plan["run_dir"] is not None and not worker
        created = self.run_dir is None and not in_place
        # --run-dir naming a missing or empty directory: a refusal below leaves it as it was
        given_fresh = (not created and not in_place and self.run_dir is not None
                       and (not Path(self.run_dir).exists() or not any(Path(self.run_dir).iterdir())))
        given_existed = given_fresh and Path(self.run_dir).exists()  # type: ignore[arg-type]
        run_dir = self._new_run_dir(resume_plan, worker, in_place, created)
        self.run_dir = run.run_dir = run_dir
        try:
            self._write_run_files(run)
            state = TrainState(backend=self.backend, run_dir=run_dir, max_epochs=spec.trainer.max_epochs,
                               max_steps=spec.trainer.max_steps, steps_per_epoch=run.loop.steps_per_epoch)
            if in_place and resume_plan["state"] is not None:  # type: ignore[index]
                from unified.resume import truncate_metrics

                truncate_metrics(run_dir / "metrics.csv", ["epoch", "step", *run.keys],
                                 resume_plan["state"])  # type: ignore[index]
            run.csv = CsvLogger(run_dir / "metrics.csv", run.keys, append=in_place)
            shown = ("train/loss", "val/loss", *(f"val/{n}" for n in run.names[:2]))
            run.progress = (ProgressDisplay(run.loop.total_steps, run.loop.epochs, keys=shown)
                            if spec.trainer.progress_bar else None)
            events = RunEvents(state, run.callbacks + [run.tracker, run.history], run.csv, run.progress,
                               spec.trainer.log_every_n_steps)
            ctx = RunContext(spec=spec, backend=self.backend, run_dir=run_dir, events=events, metrics=run.metrics,
                             dataset=run.dataset, plan=run.plan, user_model=run.model, user_loaders=run.loaders)
            self._ctx = ctx
            loggers.start(run_dir)
            events.loggers = (loggers,) if loggers else ()
            self._summary_extra = loggers.summary_fields()
            self._write_summary(state, run.tracker, adapter_cls, 0.0, time.perf_counter() - wall_start, {})
            adapter = adapter_cls(ctx)
            events.save_last_at_end = not any(isinstance(cb, ModelCheckpoint) for cb in run.callbacks)
            if resume_plan is not None:
                self._apply_resume(resume_plan, adapter, events, state)
        except (SpecError, NotSupportedError):
            loggers.discard()
            if created or given_fresh:  # a refused run leaves nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
                if given_existed:
                    run_dir.mkdir(parents=True, exist_ok=True)
                elif created:
                    _remove_empty_parents(run_dir, Path(spec.logging.dir))
            raise
        except BaseException:
            loggers.close("failed")
            raise
        return adapter, events, state

    def _new_run_dir(self, resume_plan: Optional[dict[str, Any]], worker: bool, in_place: bool, created: bool) -> Path:
        spec = self.spec
        if worker:
            import tempfile

            return prepare_run_dir(tempfile.mkdtemp(prefix=f"unified-rank{self.world.rank}-"))
        if in_place:
            return resume_plan["run_dir"]  # type: ignore[index]
        return new_run_dir(spec.logging.dir, spec.name, self.backend) if created else prepare_run_dir(self.run_dir)

    def _write_run_files(self, run: "_Run") -> None:
        """spec.yaml, classes.json and preprocess.json (what `unified export RUN_DIR` bakes in)."""
        run_dir, dataset = run.run_dir, run.dataset
        self.spec.save(run_dir / "spec.yaml")
        if dataset is not None and dataset.classes is not None:
            atomic_write_json(run_dir / "classes.json", dataset.classes)
        if dataset is not None:
            from unified.export.preprocess import Preprocess

            Preprocess.from_dataset(dataset, "spec" if run.model is None else "fit(model=...)").save(run_dir)

    def _train(self, adapter: Any, events: RunEvents, state: TrainState, run: "_Run") -> Optional[BaseException]:
        """Run the native trainer under the signal guard; returns the error it raised, if any."""
        from unified.resume import SignalGuard

        error: Optional[BaseException] = None
        guard = SignalGuard(events.request_interrupt)
        events.signal_guard = guard
        try:
            with guard:
                adapter.fit()
        except KeyboardInterrupt as e:
            state.status, error = "interrupted", e
        except BaseException as e:  # noqa: BLE001 - recorded in summary.json, then re-raised
            state.status, error = "failed", e
        finally:
            run.csv.close()
            run.loggers.flush()
            if run.progress:
                run.progress.close()
        if error is None:
            if state.status == "running":
                state.status = "completed"
            if run.dataset is not None and run.dataset.test is not None:
                state.metrics.update(adapter.evaluate("test"))
        return error

    def _finish(self, run: "_Run", adapter: Any, adapter_cls: Any, events: RunEvents, state: TrainState,
                error: Optional[BaseException], worker: bool, wall_start: float) -> FitResult:
        """summary.json, the result, the loggers' end; then final weights and the export of a good run."""
        run_dir = run.run_dir
        self._summary_extra = run.loggers.summary_fields()
        summary = self._write_summary(state, run.tracker, adapter_cls, events.train_time_s,
                                      time.perf_counter() - wall_start, {"error": _one_line(error)} if error else {})
        self.result = FitResult(status=state.status, metrics=dict(state.metrics), best=summary["best"],
                                epochs=state.epoch, global_step=state.global_step, run_dir=run_dir,
                                train_time_s=events.train_time_s, wall_time_s=summary["wall_time_s"],
                                summary=summary, history=run.history.values)
        run.loggers.close(state.status)  # after summary.json: MLflow gets it as an artifact, and its status
        if worker:
            shutil.rmtree(run_dir, ignore_errors=True)
        if error is not None:
            if isinstance(error, (KeyboardInterrupt, SpecError, NotSupportedError)):
                raise error
            raise TrainingError(f"training failed: {_one_line(error)} (run directory: {run_dir})") from error
        if state.status == "failed":
            raise TrainingError(f"training failed: {state.stop_reason} (run directory: {run_dir})")
        if worker:
            return self.result
        from unified.export.sources import save_final_weights

        save_final_weights(run_dir, adapter.get_weights())  # checkpoints/final.npz, for `unified export`
        if self.spec.export.formats:
            from unified.errors import VerificationError

            try:
                self.export()
            except VerificationError as e:
                raise VerificationError(f"export: {e} (training itself completed: {run_dir})") from None
        return self.result

    def evaluate(self, split: Optional[str] = None, data: Any = None) -> dict[str, float]:
        """Evaluate the trained model on ``split`` or on ``data=(x, y)`` (raw features, raw labels).

        Args:
            split: ``val`` or ``test``; default ``val``, or ``test`` when ``data`` is given.
            data: ``(x, y)`` to evaluate on instead of the split, a ``tf.data`` dataset of ``(x, y)``,
                or (when the model was trained on native loaders) a loader of ``(x, y)`` batches.

        Returns:
            ``{"<split>/loss": ..., "<split>/<metric>": ...}`` computed by ``unified.metrics``.
        """
        adapter, ctx = self._require_fit()
        split = split or ("test" if data is not None else "val")
        if split not in ("val", "test"):
            raise SpecError(f"evaluate(split=...): expected 'val' or 'test', got {split!r}")
        if data is None:
            return adapter.evaluate(split)
        from unified.data import Split
        from unified.native_data import arrays_of, is_batch_loader

        data = arrays_of(data, "evaluate(data=...)")
        if ctx.user_loaders and is_batch_loader(data):
            saved_loaders = ctx.user_loaders
            ctx.user_loaders = {**saved_loaders, split: data}
            try:
                return adapter.evaluate(split)
            finally:
                ctx.user_loaders = saved_loaders

        if ctx.dataset is None:
            raise SpecError("evaluate(data=...) needs the model to have been trained on arrays or spec data")
        x, y = data
        custom = Split(x=ctx.dataset.transform(x), y=ctx.dataset.encode_targets(y))
        saved = ctx.dataset
        ctx.dataset = dataclasses.replace(saved, **{split: custom})
        try:
            return adapter.evaluate(split)
        finally:
            ctx.dataset = saved

    def predict(self, x: Any) -> Any:
        """Raw model outputs (logits for classification) for raw features ``x``, as a numpy array.

        The spec's preprocessing (standardization) is applied to ``x`` first. ``x`` may also be a loader
        of batches or a ``tf.data`` dataset (their inputs are predicted in order).
        """
        from unified.native_data import is_batch_loader, is_tf_dataset, loader_inputs, tf_dataset_arrays

        adapter, ctx = self._require_fit()
        if is_tf_dataset(x):
            x = tf_dataset_arrays(x, "predict(x)")[0]
        elif is_batch_loader(x):
            x = loader_inputs(x)
        xt = ctx.dataset.transform(x) if ctx.dataset is not None else x
        return adapter.predict(xt)

    def predict_labels(self, x: Any) -> list:
        """Predicted class labels (original label values) for raw features ``x``."""
        import numpy as np

        adapter, ctx = self._require_fit()
        out = self.predict(x)
        if self.spec.task == "regression":
            raise SpecError("predict_labels: task is regression; use predict()")
        idx = (out.reshape(len(out), -1)[:, 0] > 0).astype(np.int64) if self.spec.task == "binary" else out.argmax(-1)
        return ctx.dataset.decode(idx) if ctx.dataset is not None else idx.tolist()

    def export(self, formats: Union[str, list[str], None] = None, *, out: Optional[Union[str, os.PathLike]] = None,
               verify: Optional[bool] = None, tolerance: Optional[float] = None) -> dict[str, Any]:
        """Export the trained model, standardization included, and verify every artifact.

        Args:
            formats: ``"onnx"``, ``"onnx,torchscript"`` or a list (``onnx``, ``torchscript``, ``savedmodel``,
                ``keras``, ``tflite``); default: the spec's ``export.formats``, else ``onnx``.
            out: the export directory (default ``<run_dir>/export``, replaced as a whole).
            verify: reload each artifact in its runtime and compare (default: ``export.verify``).
            tolerance: the largest accepted absolute output difference (default: ``export.tolerance``).

        Returns:
            The manifest (also written to ``<out>/manifest.json``).

        Raises:
            NotSupportedError: the backend cannot give a format (nothing is written).
            VerificationError: an artifact differs from the trained model by more than the tolerance.
        """
        from unified.export import export_trainer

        return export_trainer(self, formats, out=out, verify=verify, tolerance=tolerance)

    @property
    def model(self) -> Any:
        """The trained native model (``torch.nn.Module`` on the torch backends)."""
        adapter, _ = self._require_fit()
        return adapter.native_model()

    # -- helpers -------------------------------------------------------------------------------------
    def _check_world(self, world: Any, adapter_cls: Any = None) -> Any:
        """This process's World; None when the facade must start the other processes itself."""
        from unified.distributed import wanted_world_size

        want = wanted_world_size(self.spec)
        if getattr(adapter_cls, "devices_in_process", False) and not world.distributed:
            return world  # the adapter spreads this one process over the devices itself
        if world.distributed:
            if world.world_size != want:
                raise SpecError(f"trainer.devices * trainer.num_nodes: the job has WORLD_SIZE={world.world_size} "
                                f"processes but the spec asks for {want}", path="trainer.devices")
            return world
        if want == 1:
            return world
        if self.spec.trainer.num_nodes > 1:
            raise SpecError("trainer.num_nodes > 1: start the processes on every machine with torchrun "
                            "(see docs/scaling.md)", path="trainer.num_nodes")
        return None

    def _fit_launched(self, model: Any, data: Any, resume: Any) -> FitResult:
        """trainer.devices > 1 on one machine: torch's elastic launcher starts every rank (this process waits)."""
        from unified.distributed import launch

        return launch(self, model, data, resume)

    def _require_fit(self) -> tuple[Any, RunContext]:
        if self._adapter is None or self._ctx is None:
            raise RuntimeError("call fit() first")
        return self._adapter, self._ctx

    def _user_data(self, data: Any) -> tuple[Any, dict[str, Any]]:
        from unified.data import dataset_from_arrays

        from unified.native_data import arrays_of

        spec = self.spec
        if isinstance(data, (tuple, list)) and len(data) == 2:
            data = type(data)(arrays_of(d, f"fit(data=...)[{i}]") for i, d in enumerate(data))
        else:
            data = arrays_of(data, "fit(data=...)")
        if isinstance(data, dict):
            if "train" not in data:
                raise SpecError(f"fit(data={{...}}): expected keys train[, val, test], got {sorted(data)}")
            tx, ty = data["train"]
            return dataset_from_arrays(tx, ty, spec, val=data.get("val"), test=data.get("test")), {}
        if isinstance(data, (tuple, list)) and len(data) == 2:
            a, b = data
            if _is_arraylike(a) and _is_arraylike(b):
                return dataset_from_arrays(a, b, spec), {}
            if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
                return dataset_from_arrays(a[0], a[1], spec, val=b), {}
            return None, {"train": a, "val": b}
        if hasattr(data, "__iter__"):
            return None, {"train": data, "val": None}
        raise SpecError(f"fit(data=...): expected (x, y) arrays, a dict of splits or native loaders, "
                        f"got {type(data).__name__}")

    def _resume_plan(self, target: Any, adapter_cls: Any, steps_per_epoch: Optional[int]) -> dict[str, Any]:
        """Read what ``resume`` points at and check it fits this run, before anything is written."""
        from unified.resume import find_checkpoint, is_portable, load_portable_weights, nothing_left

        ckpt, run_dir = find_checkpoint(target)
        if run_dir is not None and self.run_dir is not None and self.run_dir.resolve() != run_dir.resolve():
            raise SpecError(f"--resume {target} continues that run directory; --run-dir {self.run_dir} names "
                            f"another (resume from {ckpt} to start a new run directory from it)")
        if is_portable(ckpt):
            return {"path": ckpt, "run_dir": None, "state": None, "payload": None,
                    "weights": load_portable_weights(ckpt)}
        if run_dir is not None and (run_dir / "summary.json").is_file():
            import json

            try:
                prev = json.loads((run_dir / "summary.json").read_text())
            except ValueError:
                prev = {}
            variant = self.entry.variant
            prev_variant = prev.get(variant.field) if variant is not None else None
            if prev.get("backend") not in (None, self.backend) or (
                    prev_variant not in (None, self.entry.variant_value(self.spec))):
                was = str(prev.get("backend")) + (f" ({variant.field} {prev_variant})" if prev_variant else "")
                raise SpecError(f"--resume {target}: that run used backend {was}; resume it with that backend, or "
                                f"continue on {self.backend} from {run_dir / 'checkpoints' / 'last.npz'} "
                                f"(portable weights only)")
        run_state, payload = adapter_cls.read_checkpoint(ckpt, self.spec)
        from unified.resume import STATE_FORMAT

        if int(run_state.get("format", 1)) > STATE_FORMAT:
            raise SpecError(f"--resume {ckpt}: written by a newer unified-trainer (run state format "
                            f"{run_state.get('format')}, this version reads {STATE_FORMAT}); upgrade to resume it")
        if run_state.get("backend") not in (None, self.backend):
            raise SpecError(f"--resume {ckpt}: written by backend {run_state.get('backend')!r}, not {self.backend!r}; "
                            f"exact resume needs the same backend (use the .npz beside it to continue here from "
                            f"its weights only)")
        spe = run_state.get("steps_per_epoch")
        if spe is not None and steps_per_epoch is not None and spe != steps_per_epoch:
            raise SpecError(f"--resume {ckpt}: the checkpoint has {spe} batches per epoch, this spec {steps_per_epoch} "
                            f"(data or data.batch_size changed); the batch position cannot be restored")
        why = nothing_left(run_state, self.spec, steps_per_epoch)
        if why:
            raise SpecError(f"--resume {ckpt}: nothing left to train: {why}; raise it to train further")
        return {"path": ckpt, "run_dir": run_dir, "state": run_state, "payload": payload, "weights": None}

    def _apply_resume(self, plan: dict[str, Any], adapter: Any, events: RunEvents, state: TrainState) -> None:
        import sys

        state.resumed_from = str(plan["path"])
        if plan["weights"] is not None:
            try:
                adapter.set_weights(plan["weights"])
            except SpecError as e:
                raise SpecError(f"--resume {plan['path']}: {e.detail}") from None
            except (RuntimeError, KeyError, ValueError) as e:
                raise SpecError(f"--resume {plan['path']}: the weights do not fit this model: "
                                f"{str(e).strip().splitlines()[0]}") from None
            sys.stderr.write(f"unified: warning: --resume {plan['path']}: portable weights, so weights only: the "
                             f"optimizer and scheduler state, epoch/step counters, batch position and callback "
                             f"state start afresh\n")
            return
        adapter.restore(plan["payload"], plan["state"])
        for warning in events.load_resume_state(plan["state"]):
            sys.stderr.write(f"unified: warning: --resume: {warning}\n")

    def _best_tracker(self) -> _BestTracker:
        """Follows :func:`unified.spec.best_monitor` (the one rule for ``best``)."""
        return _BestTracker(*best_monitor(self.spec))

    def _variant_fields(self) -> dict[str, Any]:
        variant = self.entry.variant
        return {variant.field: variant.value(self.spec)} if variant is not None else {}

    def _write_summary(self, state: TrainState, tracker: _BestTracker, adapter_cls: Any, train_time: float,
                       wall_time: float, extra: dict[str, Any]) -> dict[str, Any]:
        import numpy

        assert self.run_dir is not None
        summary = {
            "backend": self.backend,
            "keras_backend": None,  # a key of summary.json on every backend; the variant's field fills it
            **self._variant_fields(),
            "status": state.status,
            "stop_reason": state.stop_reason,
            "epochs": state.epoch,
            "global_step": state.global_step,
            "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in state.metrics.items()},
            "best": tracker.as_dict(),
            "train_time_s": round(train_time, 6),
            "wall_time_s": round(wall_time, 6),
            "world_size": (int(self.spec.trainer.devices) if getattr(adapter_cls, "devices_in_process", False)
                           else getattr(self, "world", None).world_size if getattr(self, "world", None) else 1),
            "seed": self.spec.seed,
            "precision": self.spec.trainer.precision,
            **adapter_cls.select_placement(self.spec).summary(),  # "accelerator": cpu | gpu, "devices" (unified.devices)
            "run_dir": str(self.run_dir),
            "versions": {"python": platform.python_version(), "unified-trainer": __version__,
                         "numpy": numpy.__version__, **adapter_cls.versions()},
            **getattr(self, "_summary_extra", {}),
            **({"resumed_from": state.resumed_from} if state.resumed_from else {}),
            **extra,
        }
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


def _worker_spec(spec: Spec) -> Spec:
    """The spec a rank other than 0 runs: no progress line, no external loggers, no export."""
    d = spec.to_dict()  # the spec's own serialization (a callback entry keeps its one kind)
    d["trainer"]["progress_bar"] = False
    d["logging"]["loggers"] = ["csv"]
    d["export"]["formats"] = []
    return Spec.from_dict(d)


def _remove_empty_parents(run_dir: Path, root: Path) -> None:
    """Remove ``<name>/<backend>/`` folders a refused run created under ``logging.dir`` (only empty ones)."""
    for parent in (run_dir.parent, run_dir.parent.parent):
        try:
            if parent.resolve() != root.resolve() and not any(parent.iterdir()):
                parent.rmdir()
        except OSError:
            return


def _len_or_none(obj: Any) -> Optional[int]:
    try:
        return len(obj)
    except TypeError:
        return None


def _one_line(error: Optional[BaseException]) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["UnifiedTrainer", "FitResult"]
