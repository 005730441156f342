"""Facade overhead: ``UnifiedTrainer`` vs the same work written directly against each native trainer.

Run:  python benchmarks/overhead.py [--arch mlp|cnn] [--repeats N] [--epochs E]
          [--backends torch,lightning,ignite,keras-tensorflow,keras-torch,keras-jax] [--json OUT]
      (from a checkout or with the project installed; needs torch, the lightning and ignite extras, and keras
      with tensorflow / torch / jax for the Keras backends; ``keras`` is the older name of keras-tensorflow)

Two questions: (1) per backend, the facade against the same work written directly for that backend
(facade / native); (2) every backend's facade against the ``torch`` backend's facade, the speed floor (a plain
PyTorch loop on the loop contract, adapters/torch.py), and the torch backend against a hand-written PyTorch
loop (target: facade / hand-written <= 1.05).

Task (identical on every side): sklearn digits, standardized (the facade's own split: 80/20 train/val,
seed 0 -- 1438 train / 359 val samples, 45 steps per epoch), MLP 64-128-10 with ReLU, Adam lr 1e-3,
batch 32, validation (loss + accuracy) on the val split after every epoch, no progress bars, no checkpoints.

``--arch cnn``: the model, optimizer and ``data.shape`` of examples/digits_cnn.yaml (read from the file:
digits as 1x8x8 images standardized per channel, Conv(16, 3, same) -> BatchNorm -> ReLU -> MaxPool(2), the
same with 32 channels, Flatten, Dense 64 -> ReLU, Dense 10; Adam lr 3e-3). The native sides write that model
as its users would: one ``nn.Sequential`` (torch loop, LightningModule, Ignite), ``keras.Sequential`` of
Conv2D / BatchNormalization(momentum 0.9, epsilon 1e-5) / ReLU / MaxPooling2D / Flatten / Dense on
channels-last arrays (Keras; the N,C,H,W arrays are transposed once before ``fit``, outside the window).
Everything else (data, batches, the timed window, the rounds) is as for the MLP. On Keras/JAX the window
includes XLA compilation of the train and predict steps (seconds), so there the steady state is the figure.

* native torch (the torch backend's native): a hand-written PyTorch loop, no trainer library -- per batch
  ``zero_grad``, forward, ``F.cross_entropy``, ``backward``, ``Adam.step``; after each epoch validation over
  the val split (loss sum and correct count, ``.item()`` per batch); batches from
  ``DataLoader(TensorDataset, batch_size=32, shuffle=True)``, what a PyTorch user writes. Its diagnostic
  sides: ``native-lean``, the same loop fed the facade's way (one ``TensorDataset[index tensor]`` per batch
  through ``DataLoader(sampler=<index batches>, batch_size=None)``, the mechanism of the facade's
  ``CanonicalBatchSampler``), so facade / lean is the cost of the loop contract itself; ``native-slice``,
  no DataLoader at all (``x[perm[i:i+32]]``), the leanest loop there is.
* native Lightning: a plain ``pl.LightningModule`` (``training_step`` returns the loss, ``validation_step``
  computes loss + accuracy and ``self.log``s them, ``configure_optimizers``) fitted by
  ``pl.Trainer(accelerator="cpu", devices=1, max_epochs=E, logger=False, enable_progress_bar=False,
  enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)`` on
  ``DataLoader(TensorDataset(...), batch_size=32, shuffle=True)`` -- what a Lightning user writes.
* native Ignite: ``create_supervised_trainer`` + ``create_supervised_evaluator`` with ``Accuracy``/``Loss``,
  the evaluator run on ``EPOCH_COMPLETED``, the same loaders -- what an Ignite user writes.
* native Keras (``--backends keras`` = Keras on TensorFlow, ``keras-torch`` = Keras on PyTorch):
  ``keras.Sequential([Input(64), Dense(128, relu), Dense(10)])``, ``compile(optimizer=Adam(1e-3),
  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])`` (``jit_compile`` left at its
  default ``"auto"``), ``fit(x_train, y_train, batch_size=32, epochs=E, shuffle=True,
  validation_data=(x_val, y_val), verbose=0)`` on the same standardized arrays -- what a Keras user writes.
* facade: ``UnifiedTrainer(spec, backend=..., run_dir=tmp)`` with ``trainer.progress_bar: false``,
  ``metrics: [accuracy]`` (the native sides compute accuracy only; the default would add f1_macro), no
  callbacks of the spec, every other key at its default (``log_every_n_steps: 10`` -> a metrics.csv row
  every 10 steps, ``deterministic: true``). The only extra object is a CPU-time probe (``CpuProbe``) that
  overrides ``on_fit_start``/``on_fit_end`` only, which the facade never calls per step.
* native-lean on Lightning / Ignite (diagnostic, ``--no-diagnostic`` skips it): the same native code with two
  changes a performance-minded user could make, to isolate the facade's own per-step cost from what it does
  differently: batches fetched whole (``BatchSampler`` + one ``TensorDataset[indices]`` per batch, as the
  facade's loader does, instead of 32 ``__getitem__`` + ``default_collate``) and, on Lightning, validation
  sums kept in the module and ``self.log``-ged once per epoch instead of twice per batch.
* the floor, facade-torch (Lightning / Ignite rounds; ``--no-floor`` skips it): the torch backend's facade run
  as one more side of the same rounds, so "facade / torch-backend facade" is measured like facade / native
  (same rounds, rotated order, paired ratio). The Keras backends, measured in their own processes, are set
  against the torch backend's own rounds (other moments: an unpaired ratio); naming a Keras backend adds
  ``torch`` to ``--backends``.

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
    validation; per-step time = window / optimizer steps. The hand-written torch loop is timed from just
    before its first epoch to just after its last validation: the span the torch backend's ``fit_start`` /
    ``fit_end`` enclose. Whole ``fit()``/``run()`` times are recorded
    too, to show what the window leaves out (here: ~5 ms of Lightning setup; the facade's data loading,
    spec resolution, run directory and summary.json).
    Keras: the facade's window runs from its Keras callback's ``on_train_begin`` to ``on_train_end``
    (adapters/keras.py); native Keras gets a tiny callback with ``on_train_begin``/``on_train_end`` (plus
    ``on_epoch_begin``, for the steady-state figure below) and no batch-level hook, so Keras keeps its
    asynchronous per-batch callback dispatch where it has one (the torch backend; TensorFlow is not
    "thread safe" for Keras and dispatches synchronously whatever the callbacks). On TensorFlow the window
    includes the one-time ``tf.function`` tracing and graph optimisation (measured 0.7-1.1 s for the first
    train step on either side, plus ~0.1 s for native's test step), a large part of a 5-epoch run, so the
    Keras lines also give the *steady state*: start of epoch 2 -> train end, per optimizer step of epochs
    2..E (validation included).

Method: per backend, rounds of one run of every side (order rotated per round, F N L / N L F / ...);
one warm-up round discarded; medians of ``--repeats`` rounds. The table's ratio is median(facade) /
median(native); the per-round paired ratio, the ratio of the fastest runs and the CPU-time ratio
(``time.thread_time`` over the same window) are printed as cross-checks. ``torch.set_num_threads(1)``;
``gc.collect()`` before every run; torch's global deterministic-algorithms flag (which the facade turns on
by default) is restored after every run so it never leaks into the next one.

Keras fixes its tensor backend per process, so each Keras backend is measured in a worker process of this
script (hidden ``--worker keras|keras-torch``, ``KERAS_BACKEND`` set, figures handed back as JSON), which runs
the same rounds of facade and native runs (warm-up round included) in one process. In the workers: 1 thread
(TensorFlow intra-op and inter-op pools, or ``torch.set_num_threads(1)``), ``keras.backend.clear_session()`` +
``gc.collect()`` before every run, TensorFlow's global op-determinism switch (which the facade turns on by
default) restored after every run, and CPU time is ``time.process_time`` (TensorFlow runs ops and tf.data on
its own threads; the torch sides' CPU time is the main thread's ``thread_time``). On TensorFlow,
``jit_compile="auto"`` resolves to False on a CPU-only machine (and whenever op determinism is on), the
facade's own setting, so both sides run the same non-XLA ``tf.function``; the resolved value is recorded, and
the diagnostic side ``native-xla`` (``compile(..., jit_compile=True)``) shows what XLA would change.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
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
CNN_EXAMPLE = REPO_ROOT / "examples" / "digits_cnn.yaml"


def _cnn_task() -> dict[str, Any]:
    """``--arch cnn``: the model, optimizer and ``data.shape`` of examples/digits_cnn.yaml (read from it)."""
    import yaml

    ex = yaml.safe_load(CNN_EXAMPLE.read_text(encoding="utf-8"))
    model = {"kernel_size": 3, "pool": 2, "batch_norm": True, "dropout": 0.0, **ex["model"]}  # the cnn defaults
    opt = ex["optimizer"]
    if opt.get("name") != "adam" or set(opt) - {"name", "lr"}:
        raise SystemExit(f"{CNN_EXAMPLE}: the native sides write Adam(lr) only, got optimizer {opt}")
    return {"arch": "cnn", "model": model, "lr": float(opt["lr"]), "shape": list(ex["data"]["shape"]),
            "label": (f"digits CNN (examples/digits_cnn.yaml: {ex['data']['shape']} images, channels "
                      f"{model['channels']}, kernel {model['kernel_size']}, pool {model['pool']}, batch norm "
                      f"{model['batch_norm']}, hidden {model['hidden']})")}


# --arch -> the task every side trains: the spec's model/optimizer and the native builders' parameters
TASKS: dict[str, Callable[[], dict[str, Any]]] = {
    "mlp": lambda: {"arch": "mlp", "model": {"arch": "mlp", "hidden": [HIDDEN], "activation": "relu"}, "lr": LR,
                    "shape": None, "label": f"digits MLP 64-{HIDDEN}-10 relu"},
    "cnn": _cnn_task,
}
TASK: dict[str, Any] = TASKS["mlp"]()  # set once by main() (--arch), before any run


def spec_dict(epochs: int) -> dict[str, Any]:
    data: dict[str, Any] = {"source": "sklearn:digits", "standardize": True, "val_fraction": 0.2,
                            "batch_size": BATCH, "shuffle": True}
    if TASK["shape"] is not None:
        data["shape"] = TASK["shape"]
    return {
        "name": f"overhead-digits-{TASK['arch']}",
        "seed": SEED,
        "task": "classification",
        "data": data,
        "model": dict(TASK["model"]),
        "optimizer": {"name": "adam", "lr": TASK["lr"]},
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


def _cnn(in_shape: tuple[int, ...], n_out: int) -> Any:
    """The digits_cnn.yaml model as a torch user writes it: one ``nn.Sequential`` (Conv2d(same) -> BatchNorm2d ->
    ReLU -> MaxPool2d per channel entry, Flatten, Linear -> ReLU per hidden width, Linear)."""
    from torch import nn

    m = TASK["model"]
    c, h, w = in_shape
    layers: list[Any] = []
    for width in m["channels"]:
        layers.append(nn.Conv2d(c, width, m["kernel_size"], padding="same", bias=not m["batch_norm"]))
        if m["batch_norm"]:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        if m["pool"] > 1:
            layers.append(nn.MaxPool2d(m["pool"]))
            h, w = h // m["pool"], w // m["pool"]
        c = width
    layers.append(nn.Flatten())
    n = c * h * w
    for width in m["hidden"]:
        layers += [nn.Dropout(m["dropout"])] * (m["dropout"] > 0) + [nn.Linear(n, width), nn.ReLU()]
        n = width
    layers += [nn.Dropout(m["dropout"])] * (m["dropout"] > 0) + [nn.Linear(n, n_out)]
    return nn.Sequential(*layers)


def _torch_model(arrays: dict[str, np.ndarray]) -> Any:
    """The native sides' torch model for ``TASK``: the MLP, or the CNN on (C, H, W) samples."""
    n_out = int(arrays["y_train"].max()) + 1
    if TASK["arch"] == "cnn":
        return _cnn(tuple(arrays["x_train"].shape[1:]), n_out)
    return _mlp(arrays["x_train"].shape[1], n_out)


def run_native_lightning(arrays: dict[str, np.ndarray], epochs: int, lean: bool = False) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch
    from torch.nn import functional as F

    class DigitsModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _torch_model(arrays)
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
            return torch.optim.Adam(self.parameters(), lr=TASK["lr"])

        # the timing window (see the module docstring); Lightning calls these hooks in any case
        def on_train_start(self) -> None:
            self.t_start, self.c_start = time.perf_counter(), time.thread_time()

        def on_train_end(self) -> None:
            self.t_end, self.c_end = time.perf_counter(), time.thread_time()

    train_dl, val_dl = _loaders(arrays, batched=lean)
    module = DigitsModule()
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
    model = _torch_model(arrays)
    optimizer = torch.optim.Adam(model.parameters(), lr=TASK["lr"])
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


class _IndexBatches:
    """A sampler yielding one int64 index tensor per batch, from a numpy permutation per epoch (sequential when
    ``shuffle`` is False) -- the way the facade's own loader fetches batches (``CanonicalBatchSampler`` +
    ``dataset[index tensor]`` through ``DataLoader(batch_size=None)``), written out here without the project."""

    def __init__(self, n: int, shuffle: bool) -> None:
        self.n, self.shuffle, self.epoch = n, shuffle, 0

    def __iter__(self) -> Any:
        import torch

        order = (np.random.default_rng([SEED, 2, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n)).astype(np.int64)
        self.epoch += 1
        for i in range(0, self.n, BATCH):
            yield torch.from_numpy(order[i:i + BATCH])

    def __len__(self) -> int:
        return -(-self.n // BATCH)


def run_native_torch(arrays: dict[str, np.ndarray], epochs: int, batches: str = "dataloader") -> dict[str, float]:
    """The torch backend's native side: a hand-written PyTorch loop, no trainer library.

    ``batches``: ``dataloader`` -- ``DataLoader(TensorDataset, batch_size=32, shuffle=True)``, what a PyTorch
    user writes (32 ``__getitem__`` + ``default_collate`` per batch); ``index`` (native-lean) -- one
    ``TensorDataset[index tensor]`` per batch through ``DataLoader(sampler=<index batches>, batch_size=None)``,
    the facade's own way, so facade / lean isolates the loop; ``slice`` (native-slice) -- no DataLoader at all,
    ``x[perm[i:i+32]]`` in the loop (the leanest loop there is). Each epoch: zero_grad, forward,
    cross-entropy, backward, Adam step per batch; then validation (loss sum + correct count, ``.item()`` per
    batch, as users write it) on the whole val split. Timed from just before the first epoch to just after the
    last validation: the facade's window (``fit_start`` -> ``fit_end`` around the same epoch loop).
    """
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    t_call = time.perf_counter()
    xt, yt, xv, yv = _tensors(arrays)
    model = _torch_model(arrays)
    optimizer = torch.optim.Adam(model.parameters(), lr=TASK["lr"])
    if batches == "dataloader":
        train_dl, val_dl = _loaders(arrays)
    elif batches == "index":
        train_dl = DataLoader(TensorDataset(xt, yt), sampler=_IndexBatches(len(xt), True), batch_size=None)
        val_dl = DataLoader(TensorDataset(xv, yv), sampler=_IndexBatches(len(xv), False), batch_size=None)
    elif batches == "slice":
        n = len(xt)
        train_dl = None
        val_dl = [(xv[i:i + BATCH], yv[i:i + BATCH]) for i in range(0, len(xv), BATCH)]
    else:
        raise ValueError(batches)
    steps, acc = 0, float("nan")
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(epochs):
        model.train()
        if train_dl is None:
            perm = torch.randperm(n)
            train_iter: Any = ((xt[idx], yt[idx]) for idx in (perm[i:i + BATCH] for i in range(0, n, BATCH)))
        else:
            train_iter = train_dl
        for x, y in train_iter:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
        model.eval()
        correct, total_loss, seen = 0, 0.0, 0
        with torch.no_grad():
            for x, y in val_dl:
                out = model(x)
                total_loss += F.cross_entropy(out, y, reduction="sum").item()
                correct += int((out.argmax(-1) == y).sum().item())
                seen += len(y)
        acc = correct / seen
    t1, c1 = time.perf_counter(), time.thread_time()
    return {"window_s": t1 - t0, "cpu_s": c1 - c0, "call_s": t1 - t_call, "steps": steps, "val_acc": acc}


def _keras_cnn(keras: Any, in_shape: tuple[int, ...], n_out: int) -> Any:
    """The digits_cnn.yaml model as a Keras user writes it: ``keras.Sequential`` on channels-last images
    (Conv2D(same) -> BatchNormalization (torch's momentum 0.1 and eps 1e-5 in Keras's convention) -> ReLU ->
    MaxPooling2D per channel entry, Flatten, Dense(relu) per hidden width, Dense)."""
    m = TASK["model"]
    layers: list[Any] = [keras.Input(in_shape)]
    for width in m["channels"]:
        layers.append(keras.layers.Conv2D(width, m["kernel_size"], padding="same", use_bias=not m["batch_norm"]))
        if m["batch_norm"]:
            layers.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5))
        layers.append(keras.layers.ReLU())
        if m["pool"] > 1:
            layers.append(keras.layers.MaxPooling2D(m["pool"]))
    layers.append(keras.layers.Flatten())
    for width in m["hidden"]:
        layers += [keras.layers.Dropout(m["dropout"])] * (m["dropout"] > 0)
        layers.append(keras.layers.Dense(width, activation="relu"))
    layers += [keras.layers.Dropout(m["dropout"])] * (m["dropout"] > 0) + [keras.layers.Dense(n_out)]
    return keras.Sequential(layers)


def run_native_keras(arrays: dict[str, np.ndarray], epochs: int, jit_compile: Any = "auto") -> dict[str, Any]:
    """What a Keras user writes (see the module docstring); runs in a worker with ``KERAS_BACKEND`` set."""
    import keras

    class Window(keras.callbacks.Callback):
        """The timing window. No batch-level hook: Keras's per-batch callback dispatch stays as it would be
        without this object (asynchronous on the torch backend), and this object runs at epoch boundaries
        only. ``on_epoch_begin`` marks the start of epoch 2 (the steady-state figure)."""

        t0 = t1 = t_steady = c0 = c1 = float("nan")

        def on_train_begin(self, logs: Any = None) -> None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:
                self.t_steady = time.perf_counter()

        def on_train_end(self, logs: Any = None) -> None:
            self.t1, self.c1 = time.perf_counter(), time.process_time()

    keras.utils.set_random_seed(SEED)
    x_train, x_val = arrays["x_train"], arrays["x_val"]
    n_out = int(arrays["y_train"].max()) + 1
    if TASK["arch"] == "cnn":  # a Keras user's images are channels-last: N, H, W, C (converted before fit)
        x_train, x_val = (np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in (x_train, x_val))
        model = _keras_cnn(keras, x_train.shape[1:], n_out)
    else:
        model = keras.Sequential([keras.Input((x_train.shape[1],)), keras.layers.Dense(HIDDEN, activation="relu"),
                                  keras.layers.Dense(n_out)])
    model.compile(optimizer=keras.optimizers.Adam(TASK["lr"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=jit_compile)
    window = Window()
    t0 = time.perf_counter()
    history = model.fit(x_train, arrays["y_train"], batch_size=BATCH, epochs=epochs, shuffle=True,
                        validation_data=(x_val, arrays["y_val"]), verbose=0, callbacks=[window])
    t1 = time.perf_counter()
    return {"window_s": window.t1 - window.t0, "cpu_s": window.c1 - window.c0, "call_s": t1 - t0,
            "steady_s": window.t1 - window.t_steady,
            "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "val_acc": float(history.history["val_accuracy"][-1]),
            "jit_compile": bool(model.jit_compile)}  # what "auto" resolved to (Keras's own attribute)


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


class KerasProbe(CpuProbe):
    """The Keras workers' probe: process CPU time (TensorFlow computes on its own threads) and the start of
    epoch 2 for the steady-state figure (``on_epoch_start`` is called once per epoch, never per step)."""

    t_steady = t_end = float("nan")

    def on_fit_start(self, state: Any) -> None:
        self.c0 = time.process_time()

    def on_epoch_start(self, state: Any) -> None:
        if state.epoch == 2:
            self.t_steady = time.perf_counter()

    def on_fit_end(self, state: Any) -> None:
        self.t_end, self.c1 = time.perf_counter(), time.process_time()


def make_facade_runner(backend: str, workdir: Path, probe_cls: type = CpuProbe
                       ) -> Callable[[dict[str, np.ndarray], int], dict[str, Any]]:
    def run(arrays: dict[str, np.ndarray], epochs: int) -> dict[str, Any]:
        from unified import UnifiedTrainer

        probe = probe_cls()
        run_dir = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=workdir)) / "run"  # a new one per run
        trainer = UnifiedTrainer(spec_dict(epochs), backend=backend, run_dir=run_dir, callbacks=[probe])
        t0 = time.perf_counter()
        result = trainer.fit()
        t1 = time.perf_counter()
        out = {"window_s": result.train_time_s, "cpu_s": probe.c1 - probe.c0, "call_s": t1 - t0,
               "steps": int(result.global_step),
               "val_acc": float(result.metrics["val/accuracy"])}
        if isinstance(probe, KerasProbe):
            out["steady_s"] = probe.t_end - probe.t_steady
        return out

    return run


# -- harness ---------------------------------------------------------------------------------------------

def _torch_guard() -> Callable[[], None]:
    """Restores torch's global deterministic-algorithms flag (the facade turns it on by default)."""
    import torch

    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    return lambda: torch.use_deterministic_algorithms(det, warn_only=det_warn)


def _keras_guard() -> Callable[[], None]:
    """Keras workers: a fresh Keras session per run, and the framework's global determinism switch restored
    (the facade calls ``tf.config.experimental.enable_op_determinism()`` on TensorFlow by default)."""
    import keras

    keras.backend.clear_session()
    if keras.backend.backend() == "tensorflow":
        from tensorflow.python.framework import config as tf_config

        det = tf_config.is_op_determinism_enabled()
        return lambda: (tf_config.enable_op_determinism() if det else tf_config.disable_op_determinism())
    if keras.backend.backend() == "jax":  # no global switch the facade flips on JAX
        return lambda: None
    return _torch_guard()


def _timed(fn: Callable[[dict[str, np.ndarray], int], dict[str, Any]], arrays: dict[str, np.ndarray],
           epochs: int, guard: Callable[[], Callable[[], None]] = _torch_guard) -> dict[str, Any]:
    restore = guard()
    gc.collect()
    try:
        out = fn(arrays, epochs)
    finally:
        restore()
    out["ms_per_step"] = 1000.0 * out["window_s"] / out["steps"]
    out["cpu_ms_per_step"] = 1000.0 * out["cpu_s"] / out["steps"]
    if "steady_s" in out:  # Keras: epochs 2..E only (no tf.function tracing, no first-epoch warm-up)
        steady_steps = out["steps"] - _steps_per_epoch(arrays)
        out["steady_ms_per_step"] = 1000.0 * out["steady_s"] / steady_steps if steady_steps > 0 else float("nan")
    return out


def _steps_per_epoch(arrays: dict[str, np.ndarray]) -> int:
    return -(-len(arrays["x_train"]) // BATCH)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _spread(runs: list[dict[str, Any]], key: str = "ms_per_step") -> tuple[float, float]:
    vals = [r[key] for r in runs]
    return min(vals), max(vals)


Side = tuple[str, Callable[[dict[str, np.ndarray], int], dict[str, Any]]]


def _rounds(backend: str, sides: list[Side], arrays: dict[str, np.ndarray], repeats: int, epochs: int,
            log: Callable[..., None], guard: Callable[[], Callable[[], None]] = _torch_guard
            ) -> dict[str, list[dict[str, Any]]]:
    """1 warm-up round + ``repeats`` rounds, each running every side once, order rotated per round."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side, _ in sides}
    for i in range(repeats + 1):
        k = i % len(sides)
        for side, fn in sides[k:] + sides[:k]:  # F N L, N L F, L F N, ...: no side always goes first
            r = _timed(fn, arrays, epochs, guard)
            tag = "warm-up" if i == 0 else f"round {i}"
            steady = f", steady {r['steady_ms_per_step']:.3f} ms/step" if "steady_ms_per_step" in r else ""
            log(f"  {backend:11s} {side:12s} {tag:8s} {r['ms_per_step']:.3f} ms/step (CPU "
                f"{r['cpu_ms_per_step']:.3f}){steady}, {r['steps']} steps, window {r['window_s']:.3f}s, "
                f"whole call {r['call_s']:.3f}s, val acc {r['val_acc']:.3f}")
            if i > 0:
                runs[side].append(r)
    return runs


def _summarize(backend: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
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
        if all("steady_ms_per_step" in r for r in rs):
            res[key]["steady_ms_per_step"] = _median(rs, "steady_ms_per_step")
            res[key]["steady_ms_per_step_min_max"] = _spread(rs, "steady_ms_per_step")
        if all("jit_compile" in r for r in rs):
            res[key]["jit_compile"] = sorted({bool(r["jit_compile"]) for r in rs})
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
        if "steady_ms_per_step" in res["facade"] and "steady_ms_per_step" in res[key]:
            res[f"ratio_vs_{key}"]["steady_of_medians"] = (res["facade"]["steady_ms_per_step"]
                                                         / res[key]["steady_ms_per_step"])
            res[f"ratio_vs_{key}"]["steady_paired"] = statistics.median(
                f["steady_ms_per_step"] / n["steady_ms_per_step"] for f, n in zip(runs["facade"], runs[other]))
    res["runs"] = runs
    return res


NATIVE = {"torch": run_native_torch, "lightning": run_native_lightning, "ignite": run_native_ignite}
FLOOR = "torch"  # the backend every other backend's facade is compared with (the speed floor)


def _keras_names() -> dict[str, str]:
    """--backends name -> KERAS_BACKEND of its worker: ``keras-<tensor backend>`` for each of the registry's
    Keras variants (``unified compare``'s names), and ``keras`` (= Keras on TensorFlow, the older name)."""
    from unified.registry import BUILTIN_BACKENDS

    variant = BUILTIN_BACKENDS["keras"].variant
    assert variant is not None
    return {"keras": "tensorflow", **{f"keras-{v}": v for v in variant.choices}}


KERAS = _keras_names()
# XLA's CPU client on one thread (the torch and TensorFlow workers run on one thread too)
JAX_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def keras_worker(name: str, args: argparse.Namespace, log: Callable[..., None]) -> dict[str, Any]:
    """The hidden ``--worker`` mode: one Keras backend's rounds, in this process (``KERAS_BACKEND`` set)."""
    kb = KERAS[name]
    if os.environ.get("KERAS_BACKEND") != kb or "keras" in sys.modules:
        raise SystemExit(f"--worker {name}: start it with KERAS_BACKEND={kb} (the parent process does)")
    if kb == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        versions = {"tensorflow": tf.__version__}
    elif kb == "jax":
        import jax

        versions = {"jax": jax.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS")}
    else:
        import torch

        torch.set_num_threads(1)
        versions = {"torch": torch.__version__}
    import keras

    if keras.backend.backend() != kb:
        raise SystemExit(f"--worker {name}: Keras loaded on {keras.backend.backend()!r}, expected {kb!r}")
    arrays = load_arrays(args.epochs)
    with tempfile.TemporaryDirectory(prefix="unified-overhead-keras-") as tmp:
        sides: list[Side] = [("facade", make_facade_runner("keras", Path(tmp), KerasProbe)),
                             ("native", run_native_keras)]
        if not args.no_diagnostic and kb == "tensorflow":
            sides.append(("native-xla", lambda a, e: run_native_keras(a, e, jit_compile=True)))
        runs = _rounds(name, sides, arrays, args.repeats, args.epochs, log, _keras_guard)
    env = {"keras": keras.__version__, "keras_backend": kb, **versions,
           "TF_XLA_FLAGS": os.environ.get("TF_XLA_FLAGS"), "threads": 1}
    return {"runs": runs, "env": env}


def _run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``--worker name`` in a new process (Keras cannot switch backends inside one)."""
    with tempfile.TemporaryDirectory(prefix="unified-overhead-worker-") as tmp:
        out = Path(tmp) / "worker.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--worker-out", str(out),
               "--repeats", str(args.repeats), "--epochs", str(args.epochs), "--arch", args.arch]
        cmd += ["--no-diagnostic"] * args.no_diagnostic + ["--quiet"] * args.quiet
        env = dict(os.environ, KERAS_BACKEND=KERAS[name])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
        if KERAS[name] == "jax":
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {JAX_ONE_THREAD}".strip()
        try:
            rc = subprocess.run(cmd, env=env, timeout=args.worker_timeout).returncode
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{name}: the worker process did not finish within --worker-timeout "
                             f"{args.worker_timeout:g}s; command: {' '.join(cmd)}") from None
        if rc != 0 or not out.exists():
            raise SystemExit(f"{name}: the worker process failed (exit code {rc}); command: {' '.join(cmd)}")
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="measured runs per side and backend (default 7)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    ap.add_argument("--backends", default="torch,lightning,ignite",
                    help=f"comma-separated, from torch,lightning,ignite,{','.join(KERAS)} (default "
                         "torch,lightning,ignite); keras-<tensor backend> = Keras on that tensor backend (keras = "
                         "keras-tensorflow); torch is added when a Keras backend is named without it (their floor)")
    ap.add_argument("--arch", choices=tuple(TASKS), default="mlp",
                    help="mlp: digits MLP 64-128-10, Adam 1e-3 (default); cnn: the model, optimizer and data.shape of "
                         "examples/digits_cnn.yaml (digits as 1x8x8 images), natives written with nn.Sequential "
                         "(torch, Lightning, Ignite) and keras.Sequential on channels-last arrays (Keras)")
    ap.add_argument("--worker-timeout", type=float, default=3600.0, metavar="S",
                    help="seconds a Keras worker process may take before the benchmark gives up (default 3600)")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    ap.add_argument("--no-diagnostic", action="store_true",
                    help="skip the diagnostic sides (native code with a batch-at-once loader on torch, lightning "
                         "and ignite, plus the slicing loop on torch; keras on TensorFlow: native with "
                         "jit_compile=True)")
    ap.add_argument("--no-floor", action="store_true",
                    help="lightning/ignite: skip the torch-backend facade run in each round (the paired "
                         "facade / torch-facade ratio)")
    ap.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    ap.add_argument("--worker", choices=tuple(KERAS), help=argparse.SUPPRESS)  # internal: one Keras backend
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global TASK
    TASK = TASKS[args.arch]()
    load_start = _loadavg()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    known = (*NATIVE, *KERAS)
    for b in backends:
        if b not in known:
            ap.error(f"--backends: unknown backend {b!r}; expected a subset of {','.join(known)}")
    if not backends:
        ap.error("--backends: name at least one backend")
    if any(b in KERAS for b in backends) and FLOOR not in backends and not args.worker:
        backends.insert(0, FLOOR)  # the Keras backends' floor is measured in the parent process
    if args.repeats < 1 or args.epochs < 1:
        ap.error("--repeats and --epochs must be >= 1")
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    if args.worker:
        if not args.worker_out:
            ap.error("--worker needs --worker-out")
        data = keras_worker(args.worker, args, log)
        Path(args.worker_out).write_text(json.dumps(data) + "\n", encoding="utf-8")
        return 0

    import torch

    torch.set_num_threads(1)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # the facade does the same; setup-time chatter only
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # torch 2.13 deprecates LeafSpec(); Lightning's CombinedLoader builds one per loader set-up (not per step)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")

    arrays = load_arrays(args.epochs)
    log(f"# torch.set_num_threads(1) (torch.get_num_threads() = {torch.get_num_threads()}); {args.epochs} epochs x "
        f"{len(arrays['x_train'])} train / {len(arrays['x_val'])} val samples, batch {BATCH}; 1 warm-up round + "
        f"{args.repeats} measured rounds per backend, each round runs every side once (order rotated per round)"
        + ("; Keras backends in a worker process each (1 thread)" if any(b in KERAS for b in backends) else ""))

    results: dict[str, Any] = {}
    keras_env: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="unified-overhead-") as tmp:
        for backend in backends:
            if backend in KERAS:
                data = _run_worker(backend, args)
                results[backend] = _summarize(backend, data["runs"])
                keras_env[backend] = data["env"]
                continue
            native = NATIVE[backend]
            sides: list[Side] = [
                ("facade", make_facade_runner(backend, Path(tmp))),
                ("native", native),
            ]
            if backend == FLOOR:
                if not args.no_diagnostic:
                    sides.append(("native-lean", lambda a, e: run_native_torch(a, e, batches="index")))
                    sides.append(("native-slice", lambda a, e: run_native_torch(a, e, batches="slice")))
            else:
                if not args.no_diagnostic:
                    sides.append(("native-lean", lambda a, e, _f=native: _f(a, e, lean=True)))
                if not args.no_floor:  # the floor in the same rounds: a paired facade / torch-facade ratio
                    sides.append(("facade-torch", make_facade_runner(FLOOR, Path(tmp))))
            results[backend] = _summarize(backend, _rounds(backend, sides, arrays, args.repeats, args.epochs, log))
        floor = results.get(FLOOR)
        for backend, r in results.items():
            r["vs_torch_facade"] = _vs_floor(backend, r, floor)

    versions = {}
    for mod in ("pytorch_lightning", "ignite"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "not installed"
    env = {"python": platform.python_version(), "torch": torch.__version__, **versions,
           "numpy": np.__version__, "torch_num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "arch": args.arch, "task": TASK, "epochs": args.epochs,
           "repeats": args.repeats, "batch_size": BATCH, "load_average_start": load_start,
           "train_samples": len(arrays["x_train"]), "val_samples": len(arrays["x_val"]), "keras_workers": keras_env}

    steps = results[backends[0]]["steps"]
    print(f"Facade overhead: {TASK['label']}, Adam lr {TASK['lr']:g}, batch {BATCH}, {args.epochs} epochs "
          f"({steps} optimizer steps), validation every epoch, progress bars off.")
    print(f"1 thread (torch.set_num_threads(1); TensorFlow intra/inter-op pools 1; JAX: XLA_FLAGS {JAX_ONE_THREAD}). Median of {args.repeats} runs "
          f"per side, facade and native runs alternating, 1 warm-up round discarded. ms/step = (train-start hook "
          f"-> train-end hook) / optimizer steps: the same window on both sides (the facade's result.train_time_s).")
    kver = "".join(f", keras {e['keras']} on {e['keras_backend']}" + (f" {e['tensorflow']}" if "tensorflow" in e
                                                                         else "")
                   for e in keras_env.values())
    print(f"torch {torch.__version__}, pytorch-lightning {versions['pytorch_lightning']}, pytorch-ignite "
          f"{versions['ignite']}{kver}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
          f"(load average at the start {load_start}, at the end {_loadavg()}).")
    print()
    print("| backend | native ms/step | facade ms/step | facade / native | facade / torch-backend facade |")
    print("|---|---:|---:|---:|---:|")
    for b in backends:
        r = results[b]
        vs = r["vs_torch_facade"]
        rel = "n/a" if vs is None else f"{vs['of_medians']:.2f}"
        if vs is not None and "paired" in vs:
            rel += f" (paired {vs['paired']:.2f})"
        name = f"{b} (native: hand-written loop)" if b == FLOOR else b
        print(f"| {name} | {r['native']['ms_per_step']:.3f} | {r['facade']['ms_per_step']:.3f} | "
              f"{r['ratio_vs_native']['of_medians']:.2f} | {rel} |")
    print()
    if FLOOR in results:
        r = results[FLOOR]
        rn = r["ratio_vs_native"]
        print(f"torch backend vs a hand-written PyTorch loop (target <= 1.05): facade {r['facade']['ms_per_step']:.3f} "
              f"ms/step (CPU {r['facade']['cpu_ms_per_step']:.3f})")
        print(f"  native (DataLoader(TensorDataset, batch_size=32, shuffle=True)): {r['native']['ms_per_step']:.3f} "
              f"ms/step (CPU {r['native']['cpu_ms_per_step']:.3f}); facade/native {rn['of_medians']:.2f}, paired "
              f"{rn['paired']:.2f}, fastest {rn['of_minimums']:.2f}, CPU {rn['cpu_of_medians']:.2f}")
        for side, what in (("native_lean", "native-lean (the facade's batch fetching: DataLoader over index-tensor "
                                           "batches, one TensorDataset[idx] per batch)"),
                           ("native_slice", "native-slice (no DataLoader: x[perm[i:i+32]] in the loop)")):
            if side in r:
                rs = r[f"ratio_vs_{side}"]
                print(f"  {what}: {r[side]['ms_per_step']:.3f} ms/step (CPU {r[side]['cpu_ms_per_step']:.3f}); "
                      f"facade/{side.split('_')[1]} {rs['of_medians']:.2f}, paired {rs['paired']:.2f}, fastest "
                      f"{rs['of_minimums']:.2f}, CPU {rs['cpu_of_medians']:.2f}")
        print()
    for b in backends:
        r = results[b]
        rn = r["ratio_vs_native"]
        cpu = "process CPU time" if b in KERAS else "CPU time"
        line = (f"{b}: ratio paired per round {rn['paired']:.2f}, of the fastest runs {rn['of_minimums']:.2f}, "
                f"in {cpu} {rn['cpu_of_medians']:.2f}; "
                f"min-max ms/step native {r['native']['ms_per_step_min_max'][0]:.3f}-"
                f"{r['native']['ms_per_step_min_max'][1]:.3f}, facade {r['facade']['ms_per_step_min_max'][0]:.3f}-"
                f"{r['facade']['ms_per_step_min_max'][1]:.3f}.")
        if "steady_of_medians" in rn and rn["steady_of_medians"] == rn["steady_of_medians"]:  # not NaN (1 epoch)
            line += (f" Steady state (epoch 2 start -> train end, epochs 2..E, no tracing): native "
                     f"{r['native']['steady_ms_per_step']:.3f}, facade {r['facade']['steady_ms_per_step']:.3f} "
                     f"ms/step, ratio {rn['steady_of_medians']:.2f} (paired {rn['steady_paired']:.2f}).")
        if "jit_compile" in r["native"]:
            resolved = r["native"]["jit_compile"]
            facade_xla = KERAS.get(b) == "jax"  # adapters/keras.py: jit_compile only on JAX (where XLA is the engine)
            line += (f" Native compile(jit_compile='auto') resolved to model.jit_compile={resolved}"
                     + (", as the facade's own setting, so the table compares the same execution (XLA on JAX, "
                        "none on TensorFlow and torch)." if resolved == [facade_xla] else
                        f"; the facade compiles with jit_compile={facade_xla}, so the two differ here."))
        if "native_lean" in r and b != FLOOR:
            rl = r["ratio_vs_native_lean"]
            line += (f" Diagnostic native-lean (batch-at-once loader like the facade's"
                     f"{', val metrics logged once per epoch' if b == 'lightning' else ''}): "
                     f"{r['native_lean']['ms_per_step']:.3f} ms/step, facade/lean {rl['of_medians']:.2f} "
                     f"(paired {rl['paired']:.2f}, fastest {rl['of_minimums']:.2f}, CPU {rl['cpu_of_medians']:.2f}).")
        if "native_xla" in r:
            rx = r["ratio_vs_native_xla"]
            rxla = r["native_xla"]
            line += (f" Diagnostic native-xla (compile(jit_compile=True), resolved {rxla['jit_compile']}): "
                     f"{rxla['ms_per_step']:.3f} ms/step, steady {rxla['steady_ms_per_step']:.3f}; "
                     f"facade/xla {rx['of_medians']:.2f} (steady {rx['steady_of_medians']:.2f}).")
        vs = r["vs_torch_facade"]
        if vs is not None and b != FLOOR:
            line += (f" Against the torch backend's facade ({vs['source']}: {vs['torch_ms_per_step']:.3f} ms/step): "
                     f"{vs['of_medians']:.2f}x" + (f", paired {vs['paired']:.2f}" if "paired" in vs else "")
                     + f", fastest {vs['of_minimums']:.2f}, CPU {vs['cpu_of_medians']:.2f}"
                     + (f", steady state {vs['steady']:.2f}" if "steady" in vs else "") + ".")
        line += (f" Whole call: native {r['native']['call_s']:.3f}s (window {r['native']['window_s']:.3f}s), "
                 f"facade fit() {r['facade']['call_s']:.3f}s (window {r['facade']['window_s']:.3f}s).")
        print(line)

    if args.json:
        out = {"env": env, "window": "train-start hook -> train-end hook (facade: result.train_time_s)",
               "backends": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def _vs_floor(backend: str, r: dict[str, Any], floor: dict[str, Any] | None) -> dict[str, Any] | None:
    """A backend's facade against the torch backend's facade (the speed floor): from the torch-facade side run
    in the same rounds (lightning, ignite), else from the torch backend's own rounds (Keras: another process,
    other moments)."""
    if backend == FLOOR:
        return {"of_medians": 1.0, "of_minimums": 1.0, "cpu_of_medians": 1.0, "source": "itself",
                "torch_ms_per_step": r["facade"]["ms_per_step"]}
    if "facade_torch" in r:
        rr = r["ratio_vs_facade_torch"]
        return {"of_medians": rr["of_medians"], "paired": rr["paired"], "of_minimums": rr["of_minimums"],
                "cpu_of_medians": rr["cpu_of_medians"], "source": "its run in the same rounds",
                "torch_ms_per_step": r["facade_torch"]["ms_per_step"]}
    if floor is None:
        return None
    f, t = r["facade"], floor["facade"]
    out = {"of_medians": f["ms_per_step"] / t["ms_per_step"],
           "of_minimums": f["ms_per_step_min_max"][0] / t["ms_per_step_min_max"][0],
           "cpu_of_medians": f["cpu_ms_per_step"] / t["cpu_ms_per_step"],  # Keras: process CPU vs thread CPU
           "source": "the torch backend's rounds", "torch_ms_per_step": t["ms_per_step"]}
    if "steady_ms_per_step" in f:
        out["steady"] = f["steady_ms_per_step"] / t["ms_per_step"]
    return out


if __name__ == "__main__":
    sys.exit(main())
