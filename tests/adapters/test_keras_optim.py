"""adapters/keras_optim.py: Keras 3 optimizers that reproduce torch.optim's updates.

Keras fixes its backend per process, so each Keras backend runs in one subprocess (``KERAS_BACKEND``,
all started at once) that does every config; this process computes the torch.optim reference meanwhile
and compares.

* The optimizer alone: identical float32 parameters (4 tensors incl. a bias vector) and one fixed
  sequence of 300 gradients (a quarter of the entries ~1e-8 for the first 5 steps, where Keras's own Adam
  differs most from torch's; the learning rate is halved at step 150 with ``optimizer.learning_rate = x``),
  applied with ``optimizer.apply_gradients``. Final parameters within 1e-6 of torch.optim's on the torch
  backend (eager) and on TensorFlow in a ``tf.function`` (what fit runs on a CPU-only machine); within
  XLA_PARAM_TOL under ``jit_compile=True`` (see there why).
* Training: a small Dense model trained with ``model.fit`` has per-step losses within 1e-5 of a torch
  ``nn.Linear`` model with the same initial weights, batches and optimizer (TF: jit_compile "auto" and
  True), and so does an Embedding model (sparse ``tf.IndexedSlices`` gradients with repeated rows on TF).
* Keras API facts the optimizers rely on: ``iterations`` counts finished updates (incremented after
  ``update_step``), get_config/from_config round-trips, jit_compile="auto" resolution.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("keras") is None:  # not importorskip: importing keras here would load TF
    pytest.skip("keras is not installed", allow_module_level=True)

from unified.spec import OptimizerSpec  # noqa: E402  (after the skips)

ROOT = Path(__file__).resolve().parents[2]

CONFIGS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.01},
    "sgd_momentum": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    "sgd_nesterov_wd": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "adam": {"name": "adam", "lr": 3e-3},
    "adam_wd": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-2},
    "adamw": {"name": "adamw", "lr": 3e-3},  # torch's default weight_decay 0.01
    "rmsprop": {"name": "rmsprop", "lr": 1e-3},
    "rmsprop_momentum_wd": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4},
}
FIT_CONFIGS = ("sgd_nesterov_wd", "adam", "adamw", "rmsprop_momentum_wd")
FIT_XLA_CONFIGS = ("sgd_nesterov_wd", "adamw")  # TF fit(jit_compile=True) as well

SHAPES = [(7, 5), (5,), (3, 4, 2), (64, 33)]  # incl. bias vectors; sizes on and off the SIMD width
STEPS = 300
LR_CHANGE_AT = 150  # lr *= 0.5 from this step on (optimizer.learning_rate = x / param_group["lr"])
PARAM_TOL = 1e-6
# Under XLA (TF jit_compile=True) the compiler contracts every float32 `x * y + z` into an FMA, also
# where torch rounds the product first (AdamW's `param * (1 - lr * wd)`, SGD's `momentum * buf`);
# keras.ops cannot prevent that. AdamW: ~25% of the elements differ by 1 ulp after the first step and
# the differences random-walk; measured 1.3e-5 - 1.4e-5 after 300 steps (|param| up to 3.8);
# SGD momentum 1.2e-6 - 1.4e-6.
XLA_PARAM_TOL = 5e-5
LOSS_TOL = 1e-5

FIT = {"n": 64, "d_in": 6, "hidden": 8, "d_out": 3, "batch": 16, "epochs": 2}
EMB = {"n": 64, "seq": 4, "vocab": 12, "dim": 5, "batch": 16}

KERAS_BACKENDS = ["tensorflow", "torch", "jax"]


def _problem() -> dict[str, np.ndarray]:
    """Initial parameters, the gradient sequence and the fit data/initial weights (all float32)."""
    rng = np.random.default_rng(20240601)
    out: dict[str, np.ndarray] = {}
    for i, shape in enumerate(SHAPES):
        out[f"p{i}"] = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal((STEPS, *shape)).astype(np.float32)
        g *= np.linspace(1.0, 0.2, STEPS, dtype=np.float32).reshape((STEPS,) + (1,) * len(shape))
        flat = g.reshape(STEPS, -1)
        k = max(1, flat.shape[1] // 4)  # a quarter of the entries start tiny (~1e-8) for 5 steps
        flat[:5, :k] *= np.float32(1e-8)
        out[f"g{i}"] = flat.reshape(g.shape)
    f = FIT
    out["fit_x"] = rng.standard_normal((f["n"], f["d_in"])).astype(np.float32)
    out["fit_y"] = rng.standard_normal((f["n"], f["d_out"])).astype(np.float32)
    out["fit_w0"] = (rng.standard_normal((f["d_in"], f["hidden"])) * 0.4).astype(np.float32)  # keras layout
    out["fit_b0"] = (rng.standard_normal(f["hidden"]) * 0.1).astype(np.float32)
    out["fit_w1"] = (rng.standard_normal((f["hidden"], f["d_out"])) * 0.4).astype(np.float32)
    out["fit_b1"] = (rng.standard_normal(f["d_out"]) * 0.1).astype(np.float32)
    e = EMB
    out["emb_x"] = rng.integers(0, e["vocab"], size=(e["n"], e["seq"])).astype(np.int32)  # repeats rows
    out["emb_y"] = rng.standard_normal((e["n"], 1)).astype(np.float32)
    out["emb_e"] = (rng.standard_normal((e["vocab"], e["dim"])) * 0.3).astype(np.float32)
    out["emb_w"] = (rng.standard_normal((e["seq"] * e["dim"], 1)) * 0.3).astype(np.float32)
    out["emb_b"] = np.zeros(1, np.float32)
    return out


WORKER = textwrap.dedent(
    r"""
    import json, sys, time
    import numpy as np
    import keras
    from keras import ops
    from unified.spec import OptimizerSpec
    from unified.adapters.keras_optim import make_keras_optimizer

    problem_path, out_path, meta_json = sys.argv[1:4]
    meta = json.loads(meta_json)
    prob = dict(np.load(problem_path))
    n_params, steps, lr_change_at = meta["n_params"], meta["steps"], meta["lr_change_at"]
    backend = keras.backend.backend()
    out = {}
    info = {"backend": backend, "keras": keras.__version__, "timing": {}, "iterations": {},
            "config_roundtrip": {}, "lr_dtype": {}, "resolved_jit": {}}
    # torch: eager, Keras's default there. tensorflow: graph (a tf.function, what fit uses on a CPU-only
    # machine: jit_compile="auto" resolves to False) and XLA (jit_compile=True); both run the same
    # optimizer code, eager TF runs the same kernels as graph TF and is ~50x slower per step.
    # jax: eager (one XLA computation per operation) and "jit": stateless_apply under jax.jit, what fit runs.
    modes = {"tensorflow": ["graph", "xla"], "jax": ["eager", "jit"]}.get(backend, ["eager"])

    def run_apply(configs, mode):
        # Every config at once: its own optimizer and parameters, the same gradients.
        opts, params = {}, {}
        for name, cfg in configs.items():
            opts[name] = make_keras_optimizer(OptimizerSpec(**cfg))
            params[name] = [keras.Variable(prob[f"p{i}"], name=f"p{i}") for i in range(n_params)]
            opts[name].build(params[name])
        grads = [prob[f"g{i}"] for i in range(n_params)]

        def apply_one(step_grads):
            for name in configs:
                opts[name].apply_gradients(zip(step_grads, params[name]))

        if mode == "eager":
            def apply_steps(start, stop):
                for t in range(start, stop):
                    apply_one([ops.convert_to_tensor(g[t]) for g in grads])
        elif mode == "jit":
            import jax

            # As Keras's JAX fit: the variables' values are the state of a jitted stateless step, written
            # back to the variables (jax_state_sync) only between runs, e.g. before the lr is changed.
            stacked = [jax.numpy.asarray(g) for g in grads]
            steps_fn = {}

            def make(name):
                opt = opts[name]

                @jax.jit
                def run(opt_vars, values, start, stop):
                    def body(t, carry):
                        values, opt_vars = carry
                        return opt.stateless_apply(opt_vars, [g[t] for g in stacked], values)
                    values, opt_vars = jax.lax.fori_loop(start, stop, body, (values, opt_vars))
                    return opt_vars, values
                return run

            def apply_steps(start, stop):
                for name in configs:
                    run = steps_fn.setdefault(name, make(name))
                    opt_vars, values = run([v.value for v in opts[name].variables],
                                           [v.value for v in params[name]], start, stop)
                    for v, x in zip(opts[name].variables, opt_vars):
                        v.assign(x)
                    for v, x in zip(params[name], values):
                        v.assign(x)
        else:
            import tensorflow as tf

            # One tf.function for all configs and a tf.while_loop over the steps: one trace and one XLA
            # compilation (same input shapes on every call), as fit does with steps_per_execution.
            all_grads = [tf.constant(g) for g in grads]

            @tf.function(jit_compile=(mode == "xla"))
            def _apply(start, stop, *stacked):
                def body(t):
                    apply_one([g[t] for g in stacked])
                    return (t + 1,)

                tf.while_loop(lambda t: t < stop, body, (start,))

            def apply_steps(start, stop):
                _apply(tf.constant(start), tf.constant(stop), *all_grads)

        iters_seen = {name: [] for name in configs}
        for start, stop in ((0, 1), (1, 2), (2, lr_change_at), (lr_change_at, steps)):
            if start == lr_change_at:
                for name, cfg in configs.items():  # the property setter, as Keras LR callbacks use it
                    opts[name].learning_rate = cfg["lr"] * 0.5
            apply_steps(start, stop)
            for name in configs:
                iters_seen[name].append(int(ops.convert_to_numpy(opts[name].iterations)))
        for name, opt in opts.items():
            for i, v in enumerate(params[name]):
                out[f"apply/{name}/{mode}/p{i}"] = ops.convert_to_numpy(v)
            info["iterations"][f"{name}/{mode}"] = iters_seen[name]
            info["lr_dtype"][name] = keras.backend.standardize_dtype(opt.learning_rate.dtype)
            config = opt.get_config()
            info["config_roundtrip"][name] = type(opt).from_config(dict(config)).get_config() == config

    def run_fit(cfg_name, cfg, jit):
        f = meta["fit"]
        model = keras.Sequential([
            keras.Input((f["d_in"],)),
            keras.layers.Dense(f["hidden"], activation="tanh"),
            keras.layers.Dense(f["d_out"]),
        ])
        model.set_weights([prob["fit_w0"], prob["fit_b0"], prob["fit_w1"], prob["fit_b1"]])
        model.compile(optimizer=make_keras_optimizer(OptimizerSpec(**cfg)), loss="mse", jit_compile=jit)
        means = []

        class Rec(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                means.append([])

            def on_train_batch_end(self, batch, logs=None):
                means[-1].append(float(logs["loss"]))

        model.fit(prob["fit_x"], prob["fit_y"], batch_size=f["batch"], epochs=f["epochs"], shuffle=False,
                  verbose=0, callbacks=[Rec()])
        # logs["loss"] is the running mean over the epoch: undo it (float64) to get each step's loss.
        losses = []
        for ep in means:
            prev = 0.0
            for k, m in enumerate(ep, start=1):
                losses.append(m * k - prev)
                prev = m * k
        key = f"fit/{cfg_name}/jit_{jit}"
        out[key + "/losses"] = np.asarray(losses)
        for j, w in enumerate(model.get_weights()):
            out[f"{key}/w{j}"] = w
        info["resolved_jit"][key] = bool(model.jit_compile)

    for mode in modes:
        t0 = time.perf_counter()
        run_apply(meta["configs"], mode)
        info["timing"][f"apply/{mode}"] = round(time.perf_counter() - t0, 2)
    def run_embedding_fit():
        # Embedding gradients are tf.IndexedSlices on TensorFlow, with repeated rows.
        e = meta["emb"]
        model = keras.Sequential([
            keras.Input((e["seq"],), dtype="int32"),
            keras.layers.Embedding(e["vocab"], e["dim"]),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ])
        model.set_weights([prob["emb_e"], prob["emb_w"], prob["emb_b"]])
        model.compile(optimizer=make_keras_optimizer(OptimizerSpec(**meta["configs"]["adam"])), loss="mse")
        model.fit(prob["emb_x"], prob["emb_y"], batch_size=e["batch"], epochs=1, shuffle=False, verbose=0)
        for j, w in enumerate(model.get_weights()):
            out[f"emb/w{j}"] = w

    t0 = time.perf_counter()
    run_embedding_fit()
    info["timing"]["emb"] = round(time.perf_counter() - t0, 2)
    for name in meta["fit_configs"]:
        # jit_compile="auto" everywhere (False on CPU-only TF and on torch); True on TF for two configs
        # (the XLA apply run above covers every config).
        jits = ["auto", True] if backend == "tensorflow" and name in meta["fit_xla_configs"] else ["auto"]
        for jit in jits:
            t0 = time.perf_counter()
            run_fit(name, meta["configs"][name], jit)
            info["timing"][f"fit/{name}/jit_{jit}"] = round(time.perf_counter() - t0, 2)
    np.savez(out_path, **out)
    print("INFO " + json.dumps(info))
    """
)


def _torch_optimizer(cfg: dict[str, Any], params: list[Any]) -> Any:
    o = OptimizerSpec(**cfg)
    wd = o.resolved_weight_decay
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=wd)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=wd)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=wd)


def _torch_apply(prob: dict[str, np.ndarray], cfg: dict[str, Any]) -> list[np.ndarray]:
    params = [torch.nn.Parameter(torch.from_numpy(prob[f"p{i}"].copy())) for i in range(len(SHAPES))]
    opt = _torch_optimizer(cfg, params)
    for t in range(STEPS):
        if t == LR_CHANGE_AT:
            for group in opt.param_groups:
                group["lr"] = cfg["lr"] * 0.5
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(prob[f"g{i}"][t].copy())
        opt.step()
    return [p.detach().numpy() for p in params]


def _torch_fit(prob: dict[str, np.ndarray], cfg: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    f = FIT
    l0, l1 = torch.nn.Linear(f["d_in"], f["hidden"]), torch.nn.Linear(f["hidden"], f["d_out"])
    with torch.no_grad():
        l0.weight.copy_(torch.from_numpy(prob["fit_w0"].T.copy()))
        l0.bias.copy_(torch.from_numpy(prob["fit_b0"]))
        l1.weight.copy_(torch.from_numpy(prob["fit_w1"].T.copy()))
        l1.bias.copy_(torch.from_numpy(prob["fit_b1"]))
    model = torch.nn.Sequential(l0, torch.nn.Tanh(), l1)
    opt = _torch_optimizer(cfg, model.parameters())
    x, y = torch.from_numpy(prob["fit_x"]), torch.from_numpy(prob["fit_y"])
    losses = []
    for _ in range(f["epochs"]):
        for s in range(0, f["n"], f["batch"]):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[s:s + f["batch"]]), y[s:s + f["batch"]])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    weights = [l0.weight.detach().numpy().T, l0.bias.detach().numpy(), l1.weight.detach().numpy().T,
               l1.bias.detach().numpy()]
    return np.asarray(losses), weights


def _torch_embedding_fit(prob: dict[str, np.ndarray]) -> list[np.ndarray]:
    e = EMB
    emb, lin = torch.nn.Embedding(e["vocab"], e["dim"]), torch.nn.Linear(e["seq"] * e["dim"], 1)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(prob["emb_e"]))
        lin.weight.copy_(torch.from_numpy(prob["emb_w"].T.copy()))
        lin.bias.copy_(torch.from_numpy(prob["emb_b"]))
    opt = _torch_optimizer(CONFIGS["adam"], [*emb.parameters(), *lin.parameters()])
    x, y = torch.from_numpy(prob["emb_x"]).long(), torch.from_numpy(prob["emb_y"])
    for s in range(0, e["n"], e["batch"]):
        opt.zero_grad()
        out = lin(emb(x[s:s + e["batch"]]).flatten(1))
        torch.nn.functional.mse_loss(out, y[s:s + e["batch"]]).backward()
        opt.step()
    return [emb.weight.detach().numpy(), lin.weight.detach().numpy().T, lin.bias.detach().numpy()]


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Path]:
    prob = _problem()
    path = tmp_path_factory.mktemp("keras_optim") / "problem.npz"
    np.savez(path, **prob)
    return prob, path


def _available(keras_backend: str) -> bool:
    return keras_backend == "torch" or importlib.util.find_spec(keras_backend) is not None


@pytest.fixture(scope="module")
def keras_procs(problem: tuple[dict[str, np.ndarray], Path]) -> Iterator[dict[str, tuple[Path, Any]]]:
    """Start WORKER once per installed Keras backend, all at once (each in its own process)."""
    _, path = problem
    meta = {"n_params": len(SHAPES), "steps": STEPS, "lr_change_at": LR_CHANGE_AT, "configs": CONFIGS,
            "fit_configs": list(FIT_CONFIGS),
            "fit_xla_configs": list(FIT_XLA_CONFIGS), "fit": FIT, "emb": EMB}
    procs = {}
    for kb in KERAS_BACKENDS:
        if not _available(kb):
            continue
        env = dict(os.environ, KERAS_BACKEND=kb, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        out_path = path.with_name(f"keras_{kb}.npz")
        procs[kb] = (out_path, subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(out_path), json.dumps(meta)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT)))
    yield procs
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def torch_reference(problem: tuple[dict[str, np.ndarray], Path], keras_procs) -> dict[str, Any]:
    """torch.optim on the same problem (computed while the Keras workers run)."""
    prob, _ = problem
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # elementwise results do not depend on it; idle OpenMP spinning does
    try:
        return {
            "apply": {name: _torch_apply(prob, cfg) for name, cfg in CONFIGS.items()},
            "fit": {name: _torch_fit(prob, CONFIGS[name]) for name in FIT_CONFIGS},
            "emb": _torch_embedding_fit(prob),
        }
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def keras_runs(keras_procs, torch_reference) -> dict[str, Any]:
    """The workers' results: backend -> (arrays, info), or the exception of a failed worker."""
    runs: dict[str, Any] = {}
    for kb, (out_path, proc) in keras_procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            runs[kb] = RuntimeError(f"KERAS_BACKEND={kb} worker failed ({proc.returncode}):\n{stderr[-4000:]}")
            continue
        info = json.loads([ln for ln in stdout.splitlines() if ln.startswith("INFO ")][-1][5:])
        runs[kb] = (dict(np.load(out_path)), info)
    return runs


def _run(keras_runs: dict[str, Any], keras_backend: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if keras_backend not in keras_runs:
        pytest.skip(f"{keras_backend} is not installed")
    run = keras_runs[keras_backend]
    if isinstance(run, Exception):
        raise run
    assert run[1]["backend"] == keras_backend
    return run


def _max_abs(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))


@pytest.mark.parametrize("keras_backend", KERAS_BACKENDS)
def test_keras_optimizer_api(keras_backend, keras_runs):
    _, info = _run(keras_runs, keras_backend)
    # Keras 3 increments `iterations` after update_step: 1 after the first apply, 2 after the second.
    assert all(seen == [1, 2, LR_CHANGE_AT, STEPS] for seen in info["iterations"].values()), info["iterations"]
    assert all(info["config_roundtrip"].values()), info["config_roundtrip"]
    # A constant learning rate is kept in float64, like torch's Python float (JAX: float32, no float64
    # without jax_enable_x64; emulate_fma is off there, see keras_optim.py).
    want = "float32" if keras_backend == "jax" else "float64"
    assert set(info["lr_dtype"].values()) == {want}, info["lr_dtype"]
    # compile(jit_compile="auto") is False on a CPU-only TensorFlow and on torch; True is honoured on TF;
    # JAX always compiles ("auto" -> True).
    for key, resolved in info["resolved_jit"].items():
        assert resolved == (keras_backend == "jax" or key.endswith("jit_True")), (key, resolved)


APPLY_MODES = [("torch", "eager"), ("tensorflow", "graph"), ("tensorflow", "xla"), ("jax", "eager"), ("jax", "jit")]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize(("keras_backend", "mode"), APPLY_MODES, ids=[f"{b}-{m}" for b, m in APPLY_MODES])
def test_apply_gradients_matches_torch(keras_backend, mode, config, keras_runs, torch_reference):
    out, _ = _run(keras_runs, keras_backend)
    got = [out[f"apply/{config}/{mode}/p{i}"] for i in range(len(SHAPES))]
    diff = _max_abs(got, torch_reference["apply"][config])
    print(f"{keras_backend}/{mode} {config}: max |keras - torch| after {STEPS} steps = {diff:.3g}")
    tol = XLA_PARAM_TOL if mode in ("xla", "jit") else PARAM_TOL
    assert diff <= tol, f"{keras_backend}/{mode} {config}: {diff:.3g} > {tol}"


@pytest.mark.parametrize("config", FIT_CONFIGS)
@pytest.mark.parametrize("keras_backend", KERAS_BACKENDS)
def test_fit_matches_torch(keras_backend, config, keras_runs, torch_reference):
    out, _ = _run(keras_runs, keras_backend)
    ref_losses, ref_weights = torch_reference["fit"][config]
    keys = sorted({k.rsplit("/", 1)[0] for k in out if k.startswith(f"fit/{config}/")})
    assert keys
    for key in keys:
        losses = out[key + "/losses"]
        assert losses.shape == ref_losses.shape
        loss_diff = float(np.max(np.abs(losses - ref_losses)))
        w_diff = _max_abs([out[f"{key}/w{j}"] for j in range(4)], ref_weights)
        print(f"{keras_backend} {key}: max per-step loss diff {loss_diff:.3g}, final weight diff {w_diff:.3g}")
        assert loss_diff <= LOSS_TOL, f"{key}: per-step loss differs by {loss_diff:.3g} > {LOSS_TOL}"


@pytest.mark.parametrize("keras_backend", KERAS_BACKENDS)
def test_embedding_fit_matches_torch(keras_backend, keras_runs, torch_reference):
    """Sparse (tf.IndexedSlices, repeated rows) gradients are densified before the update."""
    out, _ = _run(keras_runs, keras_backend)
    diff = _max_abs([out[f"emb/w{j}"] for j in range(3)], torch_reference["emb"])
    print(f"{keras_backend} embedding fit: final weight diff {diff:.3g}")
    assert diff <= PARAM_TOL  # squaring undensified repeated rows gave 4e-2
