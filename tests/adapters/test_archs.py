"""Built-in N-D architectures: the same weights give the same outputs in torch and in Keras on every backend.

Keras picks its backend once per process, so the Keras side runs in one subprocess per installed Keras
backend (this file run as a script: ``python tests/adapters/test_archs.py --keras-side DIR``), all started
together; the torch side runs here meanwhile. ``python tests/adapters/test_archs.py --report`` prints the
measured max differences per case and backend (the table in docs/architectures.md); with
``UNIFIED_ARCHS_CASES=design`` it measures DESIGN.md's default sizes instead of the tiny test cases.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from unified.archs import ARCHS, build_arch_plan, initial_weights, make_params, validate
from unified.errors import SpecError

TOL = 1e-5
BATCH = 4
SEED = 0
OUT = 5
LR = 0.5  # large, so that a wrong gradient (e.g. one bias where torch has two) shows after one step
VOCAB = 11
# case id -> (arch, params, one sample's shape); tiny so the whole file runs in well under a minute
SMALL_CASES: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "cnn_bn": ("cnn", {"channels": [4, 8], "hidden": [16]}, (3, 8, 8)),
    "cnn_plain_k2": ("cnn", {"channels": [4], "kernel_size": 2, "batch_norm": False, "hidden": []}, (1, 8, 8)),
    "resnet8": ("resnet", {"depth": 8, "width": 4}, (3, 8, 8)),
    "lstm": ("lstm", {"hidden_size": 8}, (6, 3)),
    "lstm_bi2_tokens": ("lstm", {"hidden_size": 8, "num_layers": 2, "bidirectional": True, "vocab_size": VOCAB,
                                 "embed_dim": 5}, (6,)),
    "gru": ("gru", {"hidden_size": 8}, (6, 3)),
    "gru_bi2": ("gru", {"hidden_size": 8, "num_layers": 2, "bidirectional": True}, (6, 3)),
    "gru_tokens": ("gru", {"hidden_size": 8, "vocab_size": VOCAB, "embed_dim": 5}, (6,)),
    "transformer": ("transformer", {"d_model": 16, "num_heads": 4, "dim_feedforward": 32, "max_len": 16}, (6, 3)),
    "transformer_tokens_gelu": ("transformer", {"d_model": 16, "num_heads": 2, "dim_feedforward": 32, "max_len": 8,
                                                "vocab_size": VOCAB, "activation": "gelu"}, (6,)),
    # dropout draws differ between frameworks: these compare the eval forward only (the layer structure)
    "cnn_dropout": ("cnn", {"channels": [4], "dropout": 0.3, "hidden": [8]}, (1, 8, 8)),
    "gru2_dropout": ("gru", {"hidden_size": 8, "num_layers": 2, "dropout": 0.3}, (6, 3)),
    "transformer_dropout": ("transformer", {"d_model": 8, "num_heads": 2, "num_layers": 1, "dim_feedforward": 16,
                                            "max_len": 8, "dropout": 0.3}, (6, 3)),
}
# DESIGN.md's default sizes, for the measurement only (UNIFIED_ARCHS_CASES=design ... --report)
DESIGN_CASES: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "cnn_default_3x32x32": ("cnn", {}, (3, 32, 32)),
    "resnet20_3x32x32": ("resnet", {"depth": 20}, (3, 32, 32)),
    "lstm_default_T50": ("lstm", {}, (50, 8)),
    "lstm_bi2_tokens_T50": ("lstm", {"num_layers": 2, "bidirectional": True, "vocab_size": 1000}, (50,)),
    "gru_bi2_T50": ("gru", {"num_layers": 2, "bidirectional": True}, (50, 8)),
    "transformer_default_T64": ("transformer", {}, (64, 8)),
    "transformer_tokens_gelu_T64": ("transformer", {"vocab_size": 1000, "activation": "gelu"}, (64,)),
}
CASES = DESIGN_CASES if os.environ.get("UNIFIED_ARCHS_CASES") == "design" else SMALL_CASES
EVAL_ONLY = {c for c, (_, params, _) in CASES.items() if params.get("dropout")}
# one compiled SGD step (a trace / jit per case, the costly part): one case per gradient structure
STEP_CASES = [c for c in ("cnn_bn", "resnet8", "lstm_bi2_tokens", "gru_bi2", "gru_tokens", "transformer_tokens_gelu",
                          "cnn_default_3x32x32", "resnet20_3x32x32", "lstm_bi2_tokens_T50", "gru_bi2_T50",
                          "transformer_tokens_gelu_T64") if c in CASES]
UNROLL_CASES = [c for c in ("lstm_bi2_tokens", "gru_bi2") if c in CASES]  # build_keras(..., unroll=True) too
KERAS_BACKENDS = [b for b in ("tensorflow", "torch", "jax") if importlib.util.find_spec(b) is not None]
STATS = ("running_mean", "running_var", "num_batches_tracked")


def _plan(case: str) -> Any:
    arch, params, shape = CASES[case]
    return build_arch_plan(arch, params, SEED, shape, OUT)


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    xs = {}
    for case, (_, params, shape) in CASES.items():
        if params.get("vocab_size"):
            xs[case] = rng.integers(0, params["vocab_size"], size=(BATCH, *shape)).astype(np.int64)
        else:
            xs[case] = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    return xs


def _targets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {case: rng.integers(0, OUT, size=BATCH).astype(np.int64) for case in CASES}


# -- the Keras side (a subprocess per backend) --------------------------------------------------------------


def keras_side(workdir: Path) -> None:
    """Build every case in Keras on this process's backend; save outputs and torch-named weights."""
    import keras

    from unified.adapters.keras_archs import build_keras, custom_objects, load_torch_weights, torch_named_weights

    xs = dict(np.load(workdir / "inputs.npz"))
    ys = _targets()
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    for case in CASES:
        plan = _plan(case)
        model = build_keras(keras, plan)
        start = torch_named_weights(model)
        summary[case] = {"names_equal": sorted(start) == sorted(plan.weights),
                         "values_equal": all(k in start and start[k].dtype == v.dtype and np.array_equal(start[k], v)
                                             for k, v in plan.weights.items())}
        arrays[f"{case}/eval"] = keras.ops.convert_to_numpy(model(xs[case], training=False))
        if case in UNROLL_CASES:
            unrolled = build_keras(keras, plan, unroll=True)
            arrays[f"{case}/eval_unrolled"] = keras.ops.convert_to_numpy(unrolled(xs[case], training=False))
        if case not in EVAL_ONLY:
            arrays[f"{case}/train"] = keras.ops.convert_to_numpy(model(xs[case], training=True))
            for name, value in torch_named_weights(model).items():
                arrays[f"{case}/after/{name}"] = value
        if case in STEP_CASES:  # one compiled SGD step from the initial weights, as fit runs it
            load_torch_weights(model, plan.weights)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.train_on_batch(xs[case], ys[case])
            for name, value in torch_named_weights(model).items():
                arrays[f"{case}/step/{name}"] = value
        # the mapping works on a model reloaded from its .keras file
        now = torch_named_weights(model)
        path = workdir / f"{case}_{keras.backend.backend()}.keras"
        model.save(path)
        again = torch_named_weights(keras.saving.load_model(path, custom_objects=custom_objects(keras)))
        summary[case]["reload_equal"] = sorted(again) == sorted(now) and all(
            np.array_equal(again[k], v) for k, v in now.items())
    np.savez(workdir / f"keras_{keras.backend.backend()}.npz", **arrays)
    print(json.dumps(summary))


def _start_keras(workdir: Path, backend: str) -> subprocess.Popen:
    # one thread each: tiny tensors, and the backends run side by side (no oversubscription on 2 cores)
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
               "TF_NUM_INTEROP_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    env = {**os.environ, **threads, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, __file__, "--keras-side", str(workdir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- the torch side ------------------------------------------------------------------------------------------


def torch_side(xs: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    import torch

    from unified.adapters.torch_archs import build_torch, state_arrays

    torch.manual_seed(0)
    ys = _targets()
    out: dict[str, dict[str, Any]] = {}
    for case in CASES:
        model = build_torch(_plan(case))
        x = torch.from_numpy(xs[case])
        with torch.no_grad():
            out[case] = {"eval": model.eval()(x).numpy()}
            if case not in EVAL_ONLY:
                out[case]["train"] = model.train()(x).numpy()
                out[case]["after"] = state_arrays(model)
        if case in STEP_CASES:
            model = build_torch(_plan(case)).train()
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            torch.nn.functional.cross_entropy(model(x), torch.from_numpy(ys[case])).backward()
            opt.step()
            out[case]["step"] = state_arrays(model)
    return out


def run_both(workdir: Path) -> dict[str, Any]:
    """Torch here, Keras in one subprocess per backend (concurrently); everything each side produced."""
    xs = _inputs()
    np.savez(workdir / "inputs.npz", **xs)
    procs = {b: _start_keras(workdir, b) for b in KERAS_BACKENDS}
    result: dict[str, Any] = {"torch": torch_side(xs), "keras": {}}
    for b, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0:
            raise AssertionError(f"Keras side on {b} failed:\n{stderr[-4000:]}")
        arrays = dict(np.load(workdir / f"keras_{b}.npz"))
        result["keras"][b] = {"summary": json.loads(stdout.strip().splitlines()[-1]), "arrays": arrays}
    return result


def max_diffs(result: dict[str, Any], backend: str, case: str) -> dict[str, float]:
    """Max |torch - keras|: eval and training outputs, batch-norm statistics after the training forward,
    every weight after one SGD step (what the case measures)."""
    t, k = result["torch"][case], result["keras"][backend]["arrays"]

    def gap(a: np.ndarray, key: str) -> float:
        return float(np.max(np.abs(a.astype(np.float64) - k[key])))

    d = {"eval": gap(t["eval"], f"{case}/eval")}
    if f"{case}/eval_unrolled" in k:
        d["eval_unrolled"] = gap(t["eval"], f"{case}/eval_unrolled")
    if "train" in t:
        d["train"] = gap(t["train"], f"{case}/train")
        stats = [n for n in t["after"] if n.endswith(STATS)]
        if stats:
            d["bn_stats"] = max(gap(t["after"][n], f"{case}/after/{n}") for n in stats)
    if "step" in t:
        d["sgd_step"] = max(gap(v, f"{case}/step/{n}") for n, v in t["step"].items())
    return d


# -- tests ----------------------------------------------------------------------------------------------------

if __name__ != "__main__":
    import pytest

    @pytest.fixture(scope="module")
    def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        pytest.importorskip("torch")
        if not KERAS_BACKENDS or importlib.util.find_spec("keras") is None:
            pytest.skip("keras is not installed")
        return run_both(tmp_path_factory.mktemp("archs"))

    # (not "backend": tests/conftest.py parametrizes that name over the training backends)
    PAIRS = [pytest.param(b, c, id=f"{c}-{b}") for b in KERAS_BACKENDS for c in CASES]

    @pytest.mark.parametrize("keras_backend,case", PAIRS)
    def test_forward_outputs_equal(both: dict[str, Any], keras_backend: str, case: str) -> None:
        d = max_diffs(both, keras_backend, case)
        assert max(d["eval"], d.get("eval_unrolled", 0.0), d.get("train", 0.0)) <= TOL, d
        # running mean / unbiased running var / batch count after one training forward
        assert d.get("bn_stats", 0.0) <= TOL, d

    @pytest.mark.parametrize("keras_backend,case",
                             [pytest.param(b, c, id=f"{c}-{b}") for b in KERAS_BACKENDS for c in STEP_CASES])
    def test_one_sgd_step_equal(both: dict[str, Any], keras_backend: str, case: str) -> None:
        # every weight (and batch-norm statistic) after one compiled Keras SGD step vs torch's
        assert max_diffs(both, keras_backend, case)["sgd_step"] <= TOL

    @pytest.mark.parametrize("keras_backend,case", PAIRS)
    def test_weights_round_trip(both: dict[str, Any], keras_backend: str, case: str) -> None:
        from unified.adapters.torch_archs import build_torch, load_state

        summary = both["keras"][keras_backend]["summary"][case]
        # torch -> keras -> torch exactly; and the same after a .keras save / load
        assert summary == {"names_equal": True, "values_equal": True, "reload_equal": True}
        if case in EVAL_ONLY:
            return
        arrays = both["keras"][keras_backend]["arrays"]
        after = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{case}/after/")}
        torch_after = both["torch"][case]["after"]
        assert sorted(after) == sorted(torch_after)
        assert all(after[k].dtype == v.dtype and after[k].shape == v.shape for k, v in torch_after.items())
        load_state(build_torch(_plan(case)), after)  # strict=True: names and shapes fit the torch module

    def test_archs_imports_no_framework() -> None:
        code = ("import sys, unified.archs; "
                "print([m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == "[]"

    def test_builders_cover_every_arch() -> None:
        from unified.adapters import keras_archs, torch_archs

        assert set(torch_archs._BUILDERS) == set(ARCHS) == set(keras_archs._BUILDERS)

    def test_initial_weights_deterministic_and_seeded() -> None:
        for case, (arch, params, shape) in CASES.items():
            p = make_params(arch, params)
            a, b = initial_weights(arch, p, 3, shape, OUT), initial_weights(arch, p, 3, shape, OUT)
            c = initial_weights(arch, p, 4, shape, OUT)
            assert all(np.array_equal(a[k], b[k]) for k in a), case
            assert any(not np.array_equal(a[k], c[k]) for k in a if a[k].dtype == np.float32 and a[k].std() > 0)

    BAD = [
        ("resnet", {"depth": 10}, (3, 8, 8), None, "model.depth"),
        ("transformer", {"d_model": 10, "num_heads": 4}, (6, 3), None, "model.d_model"),
        ("transformer", {"activation": "swish"}, (6, 3), None, "model.activation"),
        ("transformer", {"max_len": 4}, (6, 3), None, "model.max_len"),
        ("cnn", {}, (64,), None, "model.arch"),
        ("cnn", {"channels": [4, 4, 4, 4]}, (1, 8, 8), None, "model.channels"),
        ("cnn", {"channels": []}, (1, 8, 8), None, "model.channels"),
        ("cnn", {"kernel_size": 0}, (1, 8, 8), None, "model.kernel_size"),
        ("cnn", {"dropout": 1.5}, (1, 8, 8), None, "model.dropout"),
        ("resnet", {}, (8, 8), None, "model.arch"),
        ("lstm", {}, (1, 8, 8), None, "model.arch"),
        ("lstm", {}, (6,), None, "model.vocab_size"),
        ("gru", {"vocab_size": 11}, (6, 3), None, "model.vocab_size"),
        ("gru", {"vocab_size": 11}, (6,), "float32", "model.vocab_size"),
        ("lstm", {"hidden_size": 0}, (6, 3), None, "model.hidden_size"),
        ("lstm", {"bidirectional": "yes"}, (6, 3), None, "model.bidirectional"),
        ("mlp2", {}, (6, 3), None, "model.arch"),
        ("resnet", {"depth": 8.0}, (3, 8, 8), None, "model.depth"),
        ("cnn", {}, (1, 0, 8), None, "data.shape"),
    ]

    @pytest.mark.parametrize("arch,params,shape,dtype,field", BAD, ids=[f"{b[0]}-{b[4]}" for b in BAD])
    def test_bad_params_name_the_field(arch: str, params: dict[str, Any], shape: tuple[int, ...],
                                       dtype: Any, field: str) -> None:
        with pytest.raises(SpecError) as err:
            build_arch_plan(arch, params, 0, shape, OUT, in_dtype=dtype)
        assert str(err.value).startswith(f"{field}: ") and "\n" not in str(err.value), str(err.value)

    def test_unknown_field_is_named() -> None:
        with pytest.raises(SpecError, match=r"^model\.depth: is not a field of arch cnn"):
            make_params("cnn", {"depth": 8})
        with pytest.raises(SpecError, match="model.d_model"):
            validate("transformer", make_params("transformer", {"d_model": 6, "num_heads": 4}), (6, 3))


def _report(workdir: Path) -> None:
    """Print a markdown table: per case and Keras backend, max |diff| of eval / train / bn_stats / sgd_step."""
    result = run_both(workdir)
    keys = ("eval", "train", "bn_stats", "sgd_step")
    print("cells: " + " / ".join(keys) + " (- = not measured for this case)\n")
    print("| case | " + " | ".join(KERAS_BACKENDS) + " |")
    print("|---|" + "---|" * len(KERAS_BACKENDS))
    for case in CASES:
        cells = []
        for b in KERAS_BACKENDS:
            d = max_diffs(result, b, case)
            cells.append(" / ".join(f"{d[k]:.0e}" if k in d else "-" for k in keys))
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "--keras-side":
        keras_side(Path(sys.argv[2]))
    elif sys.argv[1] == "--report":
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _report(Path(d))
