"""trainer.accelerator: the selection (unified.devices) on every branch through fake GPU probes, placement on
the CPU for real, the GPU code paths of the torch loops (float16 autocast + GradScaler, a per-batch copy) run
on the CPU with fakes, Lightning's accelerator / precision / DDP backend, Keras hiding GPUs, `unified backends`,
summary.json, and the command's exit 2 for `accelerator: gpu` on this GPU-less machine on every target.

Nothing here runs on a GPU (docs/scaling.md, Accelerators, says what that leaves untested).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unified import UnifiedTrainer, load_spec
from unified.devices import ACCELERATORS, GpuProbe, Placement, devices_line, select
from unified.errors import NotSupportedError, SpecError
from unified.registry import installed_backends

REPO = Path(__file__).resolve().parents[2]
TORCH_BACKENDS = [b for b in ("torch", "ignite", "lightning") if b in installed_backends()]


def fake(count: int, framework: str = "torch"):
    """A probe that sees ``count`` GPUs and records how often it was asked."""
    calls: list[int] = []

    def probe() -> GpuProbe:
        calls.append(1)
        return GpuProbe(count, framework, "torch.cuda.device_count()", "torch.cuda.is_available() is False")

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def never() -> GpuProbe:
    raise AssertionError("accelerator: cpu must not ask the framework for GPUs")


# -- the selection, every branch ---------------------------------------------------------------------------
def test_cpu_never_probes_and_counts_processes():
    p = select("cpu", 3, "32", never)
    assert (p.accelerator, p.devices, p.dist_backend, p.device_type, p.gpus_visible) == ("cpu", 3, "gloo", "cpu", None)
    assert select("cpu", 1, "bf16-mixed", never).accelerator == "cpu"


def test_auto_picks_a_visible_gpu_else_the_cpu():
    probe = fake(0)
    p = select("auto", 1, "32", probe)
    assert (p.accelerator, p.dist_backend, p.device_type, p.gpus_visible) == ("cpu", "gloo", "cpu", 0)
    assert len(probe.calls) == 1
    probe = fake(2)
    p = select("auto", 2, "32", probe)
    assert (p.accelerator, p.devices, p.dist_backend, p.device_type, p.gpus_visible) == ("gpu", 2, "nccl", "cuda", 2)
    assert len(probe.calls) == 1
    assert p.summary() == {"accelerator": "gpu", "devices": 2}


def test_gpu_with_gpus():
    p = select("gpu", 1, "32", fake(1))
    assert p.on_gpu and p.dist_backend == "nccl" and p.devices == 1


def test_gpu_missing_is_one_line_naming_the_framework_and_why():
    with pytest.raises(SpecError) as e:
        select("gpu", 1, "32", fake(0))
    msg = str(e.value)
    assert e.value.path == "trainer.accelerator" and "\n" not in msg
    assert msg.startswith("trainer.accelerator: 'gpu' needs a GPU, but torch sees none "
                          "(torch.cuda.is_available() is False)")


@pytest.mark.parametrize("accelerator", ["gpu", "auto"])
def test_more_devices_than_gpus_names_both_numbers(accelerator):
    with pytest.raises(SpecError) as e:
        select(accelerator, 4, "32", fake(2))
    msg = str(e.value)
    assert e.value.path == "trainer.devices" and "\n" not in msg
    assert "4 GPUs" in msg and "torch sees 2" in msg and "trainer.devices <= 2" in msg
    assert ("auto" in msg) == (accelerator == "auto")


@pytest.mark.parametrize("accelerator, probe", [("cpu", never), ("auto", fake(0))])
def test_16_mixed_on_the_cpu_is_refused_with_the_reason(accelerator, probe):
    with pytest.raises(SpecError) as e:
        select(accelerator, 1, "16-mixed", probe)
    msg = str(e.value)
    assert e.value.path == "trainer.precision" and "\n" not in msg
    assert "GradScaler" in msg and "GPU" in msg and "bf16-mixed" in msg
    assert f"trainer.accelerator: {accelerator}" in msg


@pytest.mark.parametrize("accelerator", ["gpu", "auto"])
def test_16_mixed_on_a_gpu(accelerator):
    p = select(accelerator, 1, "16-mixed", fake(1))
    assert p.on_gpu and p.device_type == "cuda"


def test_schema_field():
    base = {"name": "x", "data": {"source": "sklearn:digits"}}
    assert load_spec(base).trainer.accelerator == "auto"
    assert load_spec({**base, "trainer": {"accelerator": "GPU"}}).trainer.accelerator == "gpu"
    with pytest.raises(SpecError) as e:
        load_spec({**base, "trainer": {"accelerator": "tpu"}})
    assert "trainer.accelerator" in str(e.value) and all(a in str(e.value) for a in ACCELERATORS)
    assert "accelerator: auto" in load_spec(base).to_yaml()
    docs = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert "| `accelerator` |" in docs and all(f"`{a}`" in docs for a in ACCELERATORS)


def test_devices_line():
    assert devices_line({"devices": {"cpu": 1, "gpu": 0}}) == "cpu x1, gpu x0"
    assert devices_line({"devices": {"tensorflow": {"cpu": 1, "gpu": 2}, "jax": {"cpu": 1, "gpu": None}}}) == \
        "tensorflow: cpu x1, gpu x2; jax: cpu x1, gpu x?"


# -- adapters: their probes and check_spec ------------------------------------------------------------------
def _spec(make_spec, **trainer):
    from unified.spec import Spec

    return Spec.model_validate(make_spec({"trainer": trainer}))


def test_adapter_check_spec_on_this_cpu_machine(backend, make_spec):
    from unified.registry import load_adapter

    cls = load_adapter(backend)
    spec = _spec(make_spec)
    if backend == "keras":  # its tensor backend is named by the spec; this process's (tensorflow unless told)
        from unified.registry import resolve_keras_backend

        spec = spec.resolved(backend="keras", keras_backend=resolve_keras_backend(None))
    assert cls.select_placement(spec) == Placement("cpu", 1, "auto", 0)
    with pytest.raises(SpecError, match=r"^trainer\.accelerator: 'gpu' needs a GPU, but \w+ sees none"):
        cls.check_spec(spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"accelerator": "gpu"})}))
    fp16 = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"precision": "16-mixed"})})
    if "precision:16-mixed" in cls.features:  # refused here because this machine has no GPU
        with pytest.raises(SpecError, match=r"^trainer\.precision: '16-mixed' needs a GPU"):
            cls.check_spec(fp16)
    else:  # refused on any machine (Keras), with the backend's reason
        with pytest.raises(NotSupportedError, match="16-mixed"):
            cls.check_spec(fp16)


@pytest.mark.parametrize("torch_backend", TORCH_BACKENDS)
def test_torch_backends_take_16_mixed_on_a_gpu(torch_backend, make_spec, monkeypatch):
    from unified.adapters import torch_common as tc
    from unified.registry import load_adapter

    cls = load_adapter(torch_backend)
    monkeypatch.setattr(tc.TorchAdapter, "gpu_probe", classmethod(lambda c, s: GpuProbe(2, "torch", "fake")))
    spec = _spec(make_spec, precision="16-mixed", devices=2)
    cls.check_spec(spec)  # no refusal: float16 AMP is a GPU feature and there are (fake) GPUs
    p = cls.select_placement(spec)
    assert (p.accelerator, p.devices, p.dist_backend) == ("gpu", 2, "nccl")


def test_keras_takes_16_mixed_on_a_gpu(make_spec, monkeypatch):
    """mixed_float16 + a LossScaleOptimizer (tests/adapters/test_keras_mixed.py runs it); on a GPU only."""
    if "keras" not in installed_backends():
        pytest.skip("keras is not installed")
    from unified.adapters.keras import KerasAdapter

    assert "precision:16-mixed" in KerasAdapter.features
    monkeypatch.setattr(KerasAdapter, "gpu_probe", classmethod(lambda c, s: GpuProbe(1, "tensorflow", "fake")))
    spec = _spec(make_spec, precision="16-mixed")
    KerasAdapter.check_spec(spec)
    assert KerasAdapter.select_placement(spec).on_gpu
    monkeypatch.setattr(KerasAdapter, "gpu_probe", classmethod(lambda c, s: GpuProbe(0, "tensorflow", "fake")))
    with pytest.raises(SpecError, match=r"^trainer\.precision: '16-mixed' needs a GPU"):
        KerasAdapter.check_spec(spec)


# -- Keras on several GPUs: which devices the replicas get (adapters/keras_replicas.py), with fake listings -----
TF_LISTING = [("CPU", "/job:localhost/replica:0/task:0/device:CPU:0"),
              ("GPU", "/job:localhost/replica:0/task:0/device:GPU:0"),
              ("GPU", "/job:localhost/replica:0/task:0/device:GPU:1"),
              ("GPU", "/job:localhost/replica:0/task:0/device:GPU:2")]


def test_keras_replicas_pick_the_placements_devices():
    from unified.adapters.keras_replicas import pick_devices

    assert pick_devices(Placement("gpu", 2), TF_LISTING) == [TF_LISTING[1][1], TF_LISTING[2][1]]
    cpus = [("cpu", f"cpu:{i}") for i in range(3)] + [("gpu", "gpu:0"), ("gpu", "gpu:1")]
    assert pick_devices(Placement("cpu", 2), cpus) == ["cpu:0", "cpu:1"]  # GPUs visible, accelerator: cpu
    assert pick_devices(Placement("gpu", 2), cpus) == ["gpu:0", "gpu:1"]  # never a CPU device on gpu
    with pytest.raises(NotSupportedError, match=r"2 replicas on gpu need 2 GPU devices, but only 1 are visible"):
        pick_devices(Placement("gpu", 2), [("cpu", "cpu:0"), ("cpu", "cpu:1"), ("gpu", "gpu:0")])
    with pytest.raises(NotSupportedError, match="only 0 are visible"):
        pick_devices(Placement("gpu", 2), cpus[:3])


def test_keras_replicas_on_fake_gpus(monkeypatch):
    """Replicas hand the strategy (TensorFlow) / the distribution (JAX) the first N GPUs of a (fake) listing."""
    from types import SimpleNamespace

    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    from unified.adapters.keras_replicas import Replicas

    seen: dict = {}
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        devices = [SimpleNamespace(device_type=k, name=n) for k, n in TF_LISTING]
        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: devices)
        monkeypatch.setattr(tf.distribute, "MirroredStrategy",
                            lambda devices, cross_device_ops: seen.update(tf=(devices, cross_device_ops)))
        tf_keras = SimpleNamespace(backend=SimpleNamespace(backend=lambda: "tensorflow"))
        assert Replicas(tf_keras, 2, Placement("gpu", 2)).devices == [TF_LISTING[1][1], TF_LISTING[2][1]]
        assert seen["tf"] == ([TF_LISTING[1][1], TF_LISTING[2][1]], None)  # MirroredStrategy's own GPU all-reduce
    if importlib.util.find_spec("jax") is not None:
        import jax

        fakes = {p: [SimpleNamespace(platform=p, id=i) for i in range(3)] for p in ("cpu", "gpu")}
        monkeypatch.setattr(jax, "devices", lambda platform=None: fakes[platform])
        jax_keras = SimpleNamespace(backend=SimpleNamespace(backend=lambda: "jax"),
                                    distribution=SimpleNamespace(DataParallel=lambda devices: seen.update(jax=devices)))
        Replicas(jax_keras, 2, Placement("gpu", 2))
        assert seen["jax"] == fakes["gpu"][:2]
        Replicas(jax_keras, 3, Placement("cpu", 3))
        assert seen["jax"] == fakes["cpu"]


def test_a_backend_without_a_probe_is_cpu_only(make_spec):
    from unified.adapters.base import BackendAdapter

    class CpuOnly(BackendAdapter):  # the default probe of the base class
        name = "cpu-only"

    assert not CpuOnly.gpu_capable()
    with pytest.raises(SpecError, match="trains on the CPU only"):
        CpuOnly.select_placement(_spec(make_spec, accelerator="gpu"))


# -- placement on the CPU, for real ---------------------------------------------------------------------------
@pytest.mark.parametrize("torch_backend", TORCH_BACKENDS)
def test_cpu_placement_and_summary(torch_backend, make_spec, tmp_path):
    import torch

    trainer = UnifiedTrainer(make_spec({"trainer": {"max_steps": 3, "accelerator": "cpu"}}), backend=torch_backend,
                             run_dir=tmp_path / "run")
    result = trainer.fit()
    adapter = trainer._adapter
    assert adapter.placement == Placement("cpu", 1, "cpu", None)
    assert adapter.device == torch.device("cpu") and adapter.move is None and adapter.scaler is None
    assert all(p.device.type == "cpu" for p in adapter.model.parameters())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["accelerator"] == "cpu" and summary["devices"] == 1 and result.global_step == 3
    if torch_backend == "lightning":
        from pytorch_lightning.accelerators import CPUAccelerator

        assert isinstance(adapter.trainer.accelerator, CPUAccelerator)


def test_torch_helpers_on_the_cpu():
    import torch

    from unified.adapters import torch_common as tc

    cpu = torch.device("cpu")
    assert tc.batch_mover(cpu) is None
    x, y = torch.ones(2, 3), torch.zeros(2, dtype=torch.int64)
    moved = tc.to_device({"x": x, "pair": (x, [y]), "n": 3}, cpu)
    assert moved["x"] is x and moved["pair"][1][0] is y and moved["n"] == 3 and isinstance(moved["pair"], tuple)
    assert tc.torch_device(Placement("cpu", 1)) == cpu
    assert tc.torch_device(Placement("gpu", 2), local_rank=1) == torch.device("cuda", 1)
    assert tc.grad_scaler("32", "cpu") is None and tc.grad_scaler("bf16-mixed", "cuda") is None
    with tc.autocast("16-mixed", "cpu"):
        assert torch.nn.Linear(3, 2)(x).dtype == torch.float16
    with tc.autocast("bf16-mixed", "cpu"):
        assert torch.nn.Linear(3, 2)(x).dtype == torch.bfloat16


def test_scaled_step_equals_the_plain_step():
    """optimizer_step through a GradScaler (the 16-mixed recipe) makes the very same update as without one,
    clipping included (power-of-two scales are exact in float32)."""
    import torch

    from unified.adapters import torch_common as tc

    def run(scaler):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        data = torch.randn(4, 8, 5)
        for xb in data:
            opt.zero_grad()
            tc.backward(model(xb).pow(2).mean(), scaler)
            tc.optimizer_step(opt, model, 0.5, scaler)
        return [p.detach().clone() for p in model.parameters()]

    plain, scaled = run(None), run(tc.grad_scaler("16-mixed", "cpu"))
    for a, b in zip(plain, scaled):
        assert torch.equal(a, b)


@pytest.mark.parametrize("torch_backend", [b for b in TORCH_BACKENDS if b != "lightning"])
def test_the_gpu_code_path_with_fakes(torch_backend, make_spec, tmp_path, monkeypatch):
    """A (fake) GPU run of the torch loops, placed on the CPU: 16-mixed passes the selection, every batch goes
    through the mover once, the forward runs under float16 autocast and the step through a GradScaler (which
    is saved in the checkpoint). Its losses follow the float32 run's closely."""
    import torch

    from unified.adapters import torch_common as tc

    spec = make_spec({"trainer": {"max_steps": 20, "precision": "16-mixed", "accumulate_grad_batches": 2,
                                  "gradient_clip_norm": 1.0}, "optimizer": {"name": "sgd", "lr": 0.05}})
    moves: list[int] = []

    def mover(device):
        def move(batch):
            moves.append(1)
            return tc.to_device(batch, device)
        return move

    monkeypatch.setattr(tc.TorchAdapter, "gpu_probe", classmethod(lambda c, s: GpuProbe(1, "torch", "fake")))
    monkeypatch.setattr(tc, "torch_device", lambda placement, local_rank=0: torch.device("cpu"))
    monkeypatch.setattr(tc, "batch_mover", mover)
    trainer = UnifiedTrainer(spec, backend=torch_backend, run_dir=tmp_path / "fp16")
    result = trainer.fit()
    adapter = trainer._adapter
    assert adapter.placement.on_gpu and isinstance(adapter.scaler, torch.amp.GradScaler)
    assert adapter.scaler.get_scale() > 0
    assert adapter.ctx.dataset.test is None and result.epochs == 1
    assert len(moves) == 40 + len(tc.eval_loader(adapter.ctx, "val"))  # 40 micro-batches, one validation
    ckpt = torch.load(tmp_path / "fp16" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "scaler" in ckpt and ckpt["scaler"]["scale"] > 0
    summary = json.loads((tmp_path / "fp16" / "summary.json").read_text())
    assert summary["accelerator"] == "gpu" and summary["precision"] == "16-mixed"

    monkeypatch.undo()
    ref = UnifiedTrainer(make_spec({"trainer": {"max_steps": 20, "accumulate_grad_batches": 2,
                                                "gradient_clip_norm": 1.0},
                                    "optimizer": {"name": "sgd", "lr": 0.05}}),
                         backend=torch_backend, run_dir=tmp_path / "fp32").fit()
    assert abs(result.metrics["val/loss"] - ref.metrics["val/loss"]) < 0.02 * ref.metrics["val/loss"]


def test_lightning_gets_the_selection(make_spec, tmp_path, monkeypatch):
    if "lightning" not in installed_backends():
        pytest.skip("lightning is not installed")
    from unified.adapters import lightning as lad
    from unified.adapters import torch_common as tc
    import torch

    seen: dict = {}

    class Stop(Exception):
        pass

    def recorder(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(tc.TorchAdapter, "gpu_probe", classmethod(lambda c, s: GpuProbe(2, "torch", "fake")))
    monkeypatch.setattr(tc, "torch_device", lambda placement, local_rank=0: torch.device("cpu"))
    monkeypatch.setattr(lad.pl, "Trainer", recorder)
    with pytest.raises(Exception):
        UnifiedTrainer(make_spec({"trainer": {"precision": "16-mixed"}}), backend="lightning",
                       run_dir=tmp_path / "r").fit()
    assert seen["accelerator"] == "gpu" and seen["precision"] == "16-mixed" and seen["devices"] == 1
    strategy = lad._strategy(_spec(make_spec, devices=2), Placement("gpu", 2))
    assert strategy.process_group_backend == "nccl"
    assert lad._strategy(_spec(make_spec, devices=2), Placement("cpu", 2)).process_group_backend == "gloo"


# -- Keras: GPUs hidden before the framework starts, probes that do not start JAX ----------------------------
def test_keras_hides_gpus_only_for_cpu(monkeypatch):
    if "keras" not in installed_backends():
        pytest.skip("keras is not installed")
    from unified.adapters import keras_devices

    monkeypatch.delenv("KERAS_TORCH_DEVICE", raising=False)
    keras_devices.place("torch", Placement("gpu", 1))
    assert "KERAS_TORCH_DEVICE" not in os.environ
    with pytest.warns(RuntimeWarning) if "keras" in sys.modules else _nothing():
        keras_devices.place("torch", Placement("cpu", 1))
    assert os.environ["KERAS_TORCH_DEVICE"] == "cpu"


def test_keras_hides_tensorflows_gpus_before_it_starts(monkeypatch):
    """With (fake) GPUs visible to TensorFlow, accelerator: cpu makes them invisible; gpu leaves them."""
    if "keras" not in installed_backends() or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras on tensorflow is not installed")
    import tensorflow as tf

    from unified.adapters import keras_devices

    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0", "GPU:1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: calls.append((devices, kind)))
    keras_devices.place("tensorflow", Placement("gpu", 2))
    assert calls == []
    keras_devices.place("tensorflow", Placement("cpu", 1))
    assert calls == [([], "GPU")]
    assert keras_devices.probe("tensorflow").count == 2


def test_keras_jax_cpu_sets_jax_platforms():
    code = ("import os, sys; from unified.adapters import keras_devices as k; from unified.devices import Placement; "
            "k.place('jax', Placement('cpu', 1)); print(os.environ.get('JAX_PLATFORMS'), 'jax' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["cpu", "False"]


def test_gpu_ranks_are_spawned(monkeypatch):
    from unified.distributed import START_ENV, start_method

    monkeypatch.delenv(START_ENV, raising=False)
    assert start_method(on_gpu=True) == "spawn"
    assert start_method(on_gpu=False) == ("fork" if sys.platform.startswith("linux") else "spawn")
    monkeypatch.setenv(START_ENV, "fork")
    assert start_method(on_gpu=True) == "fork"  # the user's choice wins


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_keras_jax_probe_does_not_start_jax():
    code = ("import sys; from unified.adapters import keras_devices as k; p = k.probe('jax'); "
            "print(p.count, 'jax' in sys.modules, p.none_reason)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    count, imported, reason = out.stdout.strip().split(" ", 2)
    assert (count, imported) == ("0", "False") and "plugin" in reason


# -- the command ---------------------------------------------------------------------------------------------
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "unified", *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=env)


def test_cli_accelerator_gpu_is_exit_2(target, tmp_path):
    """Every target (`target`: the conformance suite's, Keras once per tensor backend, each in its own process)
    refuses before any run directory exists, with one error line naming the framework that sees no GPU."""
    out = _cli("run", str(REPO / "examples" / "digits.yaml"), *target.run_args(), "--run-dir", str(tmp_path / "run"),
               "--set", "trainer.accelerator=gpu", tmp_path=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("unified: error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    sees = {"tensorflow": "tensorflow", "jax": "jax"}.get(target.variant or "", "torch")
    assert f"trainer.accelerator: 'gpu' needs a GPU, but {sees} sees none (" in errors[0]
    assert not (tmp_path / "run").exists()


def test_cli_backends_shows_accelerators_and_devices(tmp_path):
    out = _cli("backends", "--json", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name in TORCH_BACKENDS:
        assert rows[name]["accelerators"] == ["cpu", "gpu"]
        assert rows[name]["devices"] == {"cpu": 1, "gpu": 0, "no_gpu": "torch.cuda.is_available() is False"}
    if "keras" in rows and rows["keras"]["installed"]:
        devices = rows["keras"]["devices"]
        assert set(devices) == {"tensorflow", "torch", "jax"}
        assert all(d["gpu"] == 0 for d in devices.values())
    text = _cli("backends", tmp_path=tmp_path)
    assert text.returncode == 0
    assert "devices:   cpu x1, gpu x0" in text.stdout
