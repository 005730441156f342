"""The run's loggers, written by the facade on every backend: ``metrics.csv`` (:class:`CsvLogger`, always on),
TensorBoard and MLflow (the rows of ``metrics.csv``).

TensorBoard and MLflow receive exactly what :class:`CsvLogger` receives (``epoch, step, values``), keep
only the CSV's columns and skip empty cells, so ``metrics.csv``, the TensorBoard event file and the MLflow
run hold the same keys at the same steps whatever the backend. Neither package is imported unless its
logger is on: ``tensorboard`` costs ~0.5 s to import, ``mlflow`` ~3 s (plus ~2 s to open a SQLite store).

The TensorBoard writer uses only the ``tensorboard`` package's protobufs and record framing: it never
imports TensorFlow, even when TensorFlow is installed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from unified.errors import BackendUnavailableError, SpecError

# summary.json status -> MLflow run status.
MLFLOW_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "interrupted": "KILLED"}
_ARTIFACTS = ("spec.yaml", "summary.json", "metrics.csv", "classes.json")
_FLUSH_SECONDS = 10.0  # MLflow metrics are sent in batches by a thread: every 10 s, and at the end of the run


# -- metrics.csv -----------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class CsvLogger:
    """Wide ``metrics.csv``: ``epoch, step`` then one column per key, the columns fixed up front.

    Step rows carry ``train/loss`` and ``lr``; epoch rows carry ``train/loss_epoch``, ``val/*`` and ``lr``.
    Each row is written with one call and flushed, so the file never ends in half a row.
    """

    def __init__(self, path: Path, keys: list[str], append: bool = False) -> None:
        self.path = path
        self.columns = ["epoch", "step", *keys]
        resume = append and path.exists() and path.stat().st_size > 0  # a resumed run continues its file
        self._file: Optional[TextIO] = open(path, "a" if resume else "w", encoding="utf-8", newline="")
        if not resume:
            self._write_row(self.columns)

    def _write_row(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        assert self._file is not None
        self._file.write(buf.getvalue())
        self._file.flush()

    def log(self, epoch: int, step: int, values: dict[str, Any]) -> None:
        self._write_row([str(epoch), str(step), *(_fmt(values.get(k)) for k in self.columns[2:])])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _need(module: str, extra: str, logger: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(
            f"logging.loggers: {logger!r} needs the {module} package, which is not installed: "
            f'pip install "unified-trainer[{extra}]"')


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class TensorBoardLogger:
    """Scalars in ``<run_dir>/tensorboard/events.out.tfevents.*``, one event per CSV row.

    Values are stored as TensorBoard ``simple_value`` scalars (float32), the format every TensorBoard
    reader understands. Each row is written and flushed in one call, like the CSV.
    """

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        n = 0
        while (self.log_dir / f"{stem}.{n}").exists():
            n += 1
        self.path = self.log_dir / f"{stem}.{n}"
        self._file: Any = open(self.path, "xb")
        self._writer = RecordWriter(self._file)
        self._write(self._event(wall_time=time.time(), step=0, file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())
        self._file.flush()

    def log(self, epoch: int, step: int, values: dict[str, float]) -> None:
        summary = self._summary(value=[self._summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._write(self._event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, status: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        self.close("failed")

    def summary_fields(self) -> dict[str, Any]:
        return {}


def flatten_params(data: Any, prefix: str = "") -> dict[str, str]:
    """The spec as MLflow params: dotted keys (``optimizer.lr``, ``callbacks.0.early_stopping.patience``).

    Strings stay as they are; other values are JSON (``null``, ``true``, ``[32, 16]``), so a value can
    be passed back with ``--set key=value``. Lists holding mappings are indexed like ``--set`` paths.
    """
    out: dict[str, str] = {}
    if isinstance(data, dict) and data:
        for k, v in data.items():
            out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and any(isinstance(x, dict) for x in data):
        for i, v in enumerate(data):
            out.update(flatten_params(v, f"{prefix}.{i}" if prefix else str(i)))
    elif prefix:
        out[prefix] = data if isinstance(data, str) else json.dumps(data)
    return out


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for params, summary.json and messages)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return uri


def _param_items(params: dict[str, str]) -> list[tuple[str, str]]:
    # MLflow limits: keys of [\w./ :-] up to 250 characters, values up to 6000 characters.
    out = []
    for k, v in params.items():
        key = re.sub(r"[^\w./ :\-]", "_", k)[:250]
        out.append((key, v if len(v) <= 6000 else v[:5997] + "..."))
    return out


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    """While probing the tracking server: no retries, a short timeout (a bad URI fails in seconds)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # "Creating initial MLflow database tables..." on a new SQLite store
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store: one process at a time creates / migrates it (concurrent first runs race otherwise)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; first runs must not start at the same moment
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        f = open(db.with_name(db.name + ".lock"), "a")
    except OSError:  # MLflow reports the unusable path itself
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_tracking_uri(spec: Any) -> str:
    """``logging.mlflow.tracking_uri``, or ``sqlite:///<logging.dir>/mlflow.db``; SQLite paths made absolute."""
    uri = spec.logging.mlflow.tracking_uri
    if uri is None:
        root = Path(spec.logging.dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'mlflow.db'}"
    uri = uri.strip()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = Path(uri[len("sqlite:///"):]).expanduser()
        if str(db) not in ("", ".") and not db.is_absolute():
            uri = f"sqlite:///{db.resolve()}"
    return uri


class MlflowLogger:
    """One MLflow run per training run: the spec as params, the CSV rows as metrics, the run files as artifacts.

    :meth:`connect` runs before the run directory exists and turns a bad tracking URI into a
    :class:`SpecError`; :meth:`start` creates the MLflow run; :meth:`close` sets its status from
    ``summary.json``'s (``completed``/``stopped_early`` -> FINISHED, ``interrupted`` -> KILLED, else FAILED).
    """

    def __init__(self, client: Any, tracking_uri: str, experiment_id: str, experiment: str) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.run_id: Optional[str] = None
        self.run_dir: Optional[Path] = None
        self._buffer: list[Any] = []
        self._lock = threading.Lock()  # guards _buffer
        self._send_lock = threading.Lock()  # one log_batch sequence at a time (flusher thread or caller)
        self._wake = threading.Event()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._metric: Any = None
        self._open = False

    @classmethod
    def connect(cls, spec: Any) -> "MlflowLogger":
        """Open the tracking store and find (or create) the experiment; SpecError if that fails."""
        _need("mlflow", "mlflow", "mlflow")
        uri = resolve_tracking_uri(spec)
        name = spec.logging.mlflow.experiment or spec.name
        field = "logging.mlflow.tracking_uri"
        with _quick_http(), _store_lock(uri):
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as e:
                raise BackendUnavailableError(f"logging.loggers: 'mlflow' cannot be imported ({_first_line(e)}): "
                                              f'pip install "unified-trainer[mlflow]"') from None
            try:
                client = MlflowClient(tracking_uri=uri)
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    location = None
                    if uri.startswith("sqlite:///"):  # else MLflow puts artifacts in ./mlruns of the cwd
                        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
                    try:
                        exp_id = client.create_experiment(name, artifact_location=location)
                    except Exception:  # noqa: BLE001 - another process created it first
                        exp = client.get_experiment_by_name(name)
                        if exp is None:
                            raise
                        exp_id = exp.experiment_id
                else:
                    exp_id = exp.experiment_id
            except Exception as e:  # noqa: BLE001 - MlflowException, a missing DB driver, an unreachable server
                raise SpecError(f"cannot use MLflow tracking URI {redact(uri)!r}: {_first_line(e).replace(uri, redact(uri))}",
                                path=field) from None
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise SpecError(f"MLflow experiment {name!r} is deleted in {redact(uri)}; restore it or choose another name",
                            path="logging.mlflow.experiment")
        return cls(client, uri, exp_id, name)

    def start(self, run_dir: Path, spec: Any, resumed_from: Optional[str] = None) -> None:
        """Create the run, tagged with the backend and run directory, and log the flattened spec as params.

        ``resumed_from``: the MLflow run of the run directory's earlier, interrupted part (marked KILLED
        if it was left RUNNING); the new run is tagged with it.
        """
        from mlflow.entities import Metric, Param

        self._metric = Metric
        self.run_dir = Path(run_dir)
        tags = {"unified.backend": str(spec.backend), "unified.run_dir": str(self.run_dir),
                "unified.spec_name": spec.name}
        if spec.keras_backend:
            tags["unified.keras_backend"] = spec.keras_backend
        if resumed_from:
            tags["unified.resumed_from_mlflow_run"] = resumed_from
            with contextlib.suppress(Exception):  # a process killed hard leaves its run RUNNING
                if self.client.get_run(resumed_from).info.status == "RUNNING":
                    self.client.set_terminated(resumed_from, "KILLED")
        run = self.client.create_run(self.experiment_id, run_name=f"{spec.name}-{spec.backend}-{self.run_dir.name}",
                                     tags=tags)
        self.run_id, self._open = run.info.run_id, True
        flat = flatten_params(spec.to_dict())
        if flat.get("logging.mlflow.tracking_uri") not in (None, "null"):
            flat["logging.mlflow.tracking_uri"] = redact(flat["logging.mlflow.tracking_uri"])
        params = [Param(k, v) for k, v in _param_items(flat)]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self._thread = threading.Thread(target=self._flusher, name="unified-mlflow-flusher", daemon=True)
        self._thread.start()

    def log(self, epoch: int, step: int, values: dict[str, float]) -> None:
        """Queue the row's points; a background thread sends them (the training loop never waits on MLflow)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        ts = int(time.time() * 1000)
        points = [self._metric(k, v, ts, step) for k, v in values.items()]
        with self._lock:
            self._buffer.extend(points)
            full = len(self._buffer) >= 1000
        if full:
            self._wake.set()

    def _flusher(self) -> None:
        while not self._stop:
            self._wake.wait(_FLUSH_SECONDS)
            self._wake.clear()
            if self._stop:
                return
            try:
                self._send()
            except Exception as e:  # noqa: BLE001 - raised in the training thread by the next log()
                self._error = e
                return

    def _send(self) -> None:
        with self._send_lock:
            with self._lock:
                points, self._buffer = self._buffer, []
            for i in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
                try:
                    self.client.log_batch(self.run_id, metrics=points[i:i + 1000])
                except BaseException:
                    with self._lock:  # keep what was not sent: close() tries once more
                        self._buffer[:0] = points[i:]
                    raise

    def _stop_flusher(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def flush(self) -> None:
        """Send everything queued now, in the calling thread."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._open:
            self._send()

    def close(self, status: str) -> None:
        """Flush, attach the run's small files as artifacts, and end the MLflow run with ``status``."""
        if not self._open:
            return
        self._stop_flusher()
        try:
            self._error = None
            self.flush()
            assert self.run_dir is not None
            for name in _ARTIFACTS:
                if (self.run_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
        finally:
            self._open = False
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

    def discard(self) -> None:
        """Setup failed before training: delete the MLflow run, like the run directory."""
        self._stop_flusher()
        if self.run_id is not None:
            self._open = False
            self.client.delete_run(self.run_id)
            self.run_id = None

    def summary_fields(self) -> dict[str, Any]:
        return {"mlflow": {"tracking_uri": redact(self.tracking_uri), "experiment": self.experiment,
                           "experiment_id": self.experiment_id, "run_id": self.run_id}}


def _csv_rows(path: Path) -> list[tuple[int, int, dict[str, float]]]:
    """The data rows already in ``metrics.csv`` (only when a run is resumed in place)."""
    import csv

    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [(int(r["epoch"]), int(r["step"]), {k: float(v) for k, v in r.items() if k not in ("epoch", "step") and v})
                for r in csv.DictReader(f) if r.get("step")]


def _previous_mlflow_run(run_dir: Path, tracking_uri: str) -> Optional[str]:
    try:
        prev = json.loads((run_dir / "summary.json").read_text()).get("mlflow") or {}
    except (OSError, ValueError):
        return None
    return prev.get("run_id") if prev.get("tracking_uri") == redact(tracking_uri) else None


class RunLoggers:
    """The loggers a spec turns on besides the CSV, fed the CSV's rows.

    A logger that fails during training (an MLflow server going away) is reported once on stderr and
    dropped: training goes on, and ``summary.json`` notes the error. Only setup problems are fatal.
    """

    def __init__(self, spec: Any, keys: list[str]) -> None:
        self.spec = spec
        self.keys = frozenset(keys)
        self._mlflow: Optional[MlflowLogger] = None
        self.active: list[Any] = []
        self.started: list[Any] = []
        self.errors: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.active)

    def connect(self) -> "RunLoggers":
        """Check the packages and the tracking store, before the run directory exists."""
        loggers = self.spec.logging.loggers
        if "tensorboard" in loggers:
            _need("tensorboard", "tensorboard", "tensorboard")
        if "mlflow" in loggers:
            self._mlflow = MlflowLogger.connect(self.spec)
        return self

    def start(self, run_dir: Path) -> None:
        """Open the writers in ``run_dir`` (TensorBoard event file, MLflow run).

        A run resumed in place already has rows in ``metrics.csv`` (cut back to the checkpoint): they are
        written again, to a fresh event file (the old ones are removed) and to the new MLflow run, so both
        keep holding exactly what the CSV holds.
        """
        run_dir = Path(run_dir)
        prior = _csv_rows(run_dir / "metrics.csv")
        if "tensorboard" in self.spec.logging.loggers:
            if prior:
                for old in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
                    old.unlink()
            self.active.append(TensorBoardLogger(run_dir / "tensorboard"))
            self.started.append(self.active[-1])
        if self._mlflow is not None:
            try:
                self._mlflow.start(run_dir, self.spec, _previous_mlflow_run(run_dir, self._mlflow.tracking_uri))
            except Exception as e:  # noqa: BLE001 - the store accepted the probe but refuses the run
                self._mlflow.discard()
                raise SpecError(f"MLflow at {redact(self._mlflow.tracking_uri)!r} refused the run: {_first_line(e)}",
                                path="logging.mlflow.tracking_uri") from None
            self.active.append(self._mlflow)
            self.started.append(self._mlflow)
        for epoch, step, values in prior:
            self.log(epoch, step, values)

    def _guard(self, logger: Any, what: str, *args: Any) -> None:
        try:
            getattr(logger, what)(*args)
        except Exception as e:  # noqa: BLE001 - a logger must not kill training
            name = "mlflow" if isinstance(logger, MlflowLogger) else "tensorboard"
            self.errors[name] = _first_line(e)
            sys.stderr.write(f"unified: warning: {name} logging failed, continuing without it: {_first_line(e)}\n")
            if logger in self.active:
                self.active.remove(logger)

    def log(self, epoch: int, step: int, values: dict[str, Any]) -> None:
        """One CSV row: only the CSV's columns, and no empty cells."""
        row = {k: float(v) for k, v in values.items() if v is not None and k in self.keys}
        if row:
            for lg in list(self.active):
                self._guard(lg, "log", epoch, step, row)

    def flush(self) -> None:
        for lg in list(self.active):
            self._guard(lg, "flush")

    def close(self, status: str) -> None:
        """End of the run, after the final ``summary.json``: flush, artifacts, MLflow run status."""
        for lg in self.started:
            if lg in self.active:
                self._guard(lg, "close", status)
            else:  # failed during training: one more try to send what is left and set the status
                with contextlib.suppress(Exception):
                    lg.close(status)
        self.active, self.started = [], []

    def discard(self) -> None:
        """Setup failed before training: close the writers and delete the MLflow run."""
        for lg in self.started:
            with contextlib.suppress(Exception):  # the setup error is the one to report
                lg.discard()
        self.active, self.started = [], []

    def summary_fields(self) -> dict[str, Any]:
        """``summary.json`` fields: ``mlflow: {tracking_uri, experiment, experiment_id, run_id}``."""
        out: dict[str, Any] = {}
        if self._mlflow is not None:
            out.update(self._mlflow.summary_fields())
            if "mlflow" in self.errors:
                out["mlflow"]["error"] = self.errors["mlflow"]
        if "tensorboard" in self.errors:
            out["tensorboard"] = {"error": self.errors["tensorboard"]}
        return out
