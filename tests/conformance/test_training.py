"""The conformance suite: every behaviour below must hold on every installed backend."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from unified import NotSupportedError, SpecError, TrainingError, UnifiedTrainer
from unified.data import load_dataset
from unified.models import build_plan
from unified.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def fit(spec: dict, backend: str, **kw):
    trainer = UnifiedTrainer(spec, backend=backend)
    return trainer, trainer.fit(**kw)


def test_digits_example_reaches_095(backend, tmp_path):
    spec = load_spec(ROOT / "examples" / "digits.yaml",
                     overrides={"logging.dir": str(tmp_path), "trainer.progress_bar": False})
    result = UnifiedTrainer(spec, backend=backend).fit()
    assert result.status in ("completed", "stopped_early")
    assert result.metrics["val/accuracy"] >= 0.95
    summary = json.loads((result.run_dir / "summary.json").read_text())
    for key in ("backend", "keras_backend", "status", "epochs", "global_step", "metrics", "best", "train_time_s",
                "wall_time_s", "versions"):
        assert key in summary, key
    assert summary["backend"] == backend
    assert summary["global_step"] == result.global_step > 0
    assert 0 < summary["train_time_s"] <= summary["wall_time_s"]
    assert summary["best"]["monitor"] == "val/accuracy"
    assert summary["best"]["value"] == pytest.approx(max(
        float(r["val/accuracy"]) for r in read_csv(result.run_dir / "metrics.csv")[1] if r["val/accuracy"]))


def test_first_step_loss_matches_a_hand_computation(backend, make_spec):
    """Canonical batch order + portable initial weights: step 1's loss is computable by hand."""
    torch = pytest.importorskip("torch")
    spec_dict = make_spec({"trainer": {"max_steps": 1, "log_every_n_steps": 1}})
    _, result = fit(spec_dict, backend)
    spec = load_spec(spec_dict)
    ds = load_dataset(spec)
    plan = build_plan(spec, ds.in_features, ds.out_features)
    idx = ds.epoch_batches(0)[0]
    x = torch.from_numpy(ds.train.x[idx])
    h = torch.relu(x @ torch.from_numpy(plan.weights["layers.0.weight"]).T + torch.from_numpy(plan.weights["layers.0.bias"]))
    logits = h @ torch.from_numpy(plan.weights["layers.1.weight"]).T + torch.from_numpy(plan.weights["layers.1.bias"])
    expected = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ds.train.y[idx])).item()
    _, rows = read_csv(result.run_dir / "metrics.csv")
    assert float(rows[0]["train/loss"]) == pytest.approx(expected, abs=1e-6)
    assert result.global_step == 1 and result.epochs == 1


def test_metrics_csv_layout(backend, make_spec):
    _, result = fit(make_spec({"trainer": {"max_epochs": 2, "log_every_n_steps": 10}}), backend)
    columns, rows = read_csv(result.run_dir / "metrics.csv")
    assert columns == ["epoch", "step", "train/loss", "train/loss_epoch", "lr", "val/loss", "val/accuracy",
                       "val/f1_macro"]
    steps_per_epoch = 45  # 1438 train samples / 32
    step_rows = [r for r in rows if r["train/loss"]]
    epoch_rows = [r for r in rows if r["val/loss"]]
    assert [int(r["step"]) for r in step_rows] == list(range(10, 2 * steps_per_epoch + 1, 10))
    assert [(int(r["epoch"]), int(r["step"])) for r in epoch_rows] == [(1, 45), (2, 90)]
    assert all(r["train/loss_epoch"] and r["lr"] for r in epoch_rows)
    assert len(rows) == len(step_rows) + len(epoch_rows)


def test_max_steps_wins_and_partial_epoch_is_validated(backend, make_spec):
    _, result = fit(make_spec({"trainer": {"max_epochs": 1, "max_steps": 50}}), backend)
    assert result.global_step == 50
    assert result.epochs == 2
    _, rows = read_csv(result.run_dir / "metrics.csv")
    epoch_rows = [r for r in rows if r["val/loss"]]
    assert [(r["epoch"], r["step"]) for r in epoch_rows] == [("1", "45"), ("2", "50")]


def test_early_stopping_stops_at_the_same_epoch(backend, make_spec):
    # min_delta so large that nothing after epoch 1 counts as an improvement: patience 1 stops at epoch 2.
    spec = make_spec({"trainer": {"max_epochs": 6},
                      "callbacks": [{"early_stopping": {"monitor": "val/loss", "patience": 1, "min_delta": 10.0}}]})
    _, result = fit(spec, backend)
    assert result.status == "stopped_early"
    assert result.epochs == 2
    assert result.global_step == 90
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped_early" and "early stopping" in summary["stop_reason"]


def test_model_checkpoint_best_and_last(backend, make_spec):
    spec = make_spec({"trainer": {"max_epochs": 3},
                      "callbacks": [{"model_checkpoint": {"monitor": "val/accuracy", "mode": "max", "save_top_k": 2}}]})
    trainer, result = fit(spec, backend)
    ck = result.run_dir / "checkpoints"
    for name in ("best.ckpt", "best.npz", "last.ckpt", "last.npz"):
        assert (ck / name).stat().st_size > 0, name
    assert len(list(ck.glob("epoch=*.ckpt"))) == 2
    assert not list(ck.glob(".*.tmp"))  # no temp files left behind
    last = np.load(ck / "last.npz")
    final = {k: v for k, v in trainer._adapter.get_weights().items()}
    assert set(last.files) == set(final)
    for k in final:
        np.testing.assert_array_equal(last[k], final[k])
    assert result.best["monitor"] == "val/accuracy" and result.best["epoch"] in (1, 2, 3)


def test_user_callback_sees_every_hook_in_order(backend, make_spec, user_code):
    spec = make_spec({"trainer": {"max_epochs": 2, "max_steps": None},
                      "callbacks": [{"python": {"target": f"{user_code}:Recorder"}},
                                    {"model_checkpoint": {"save_top_k": 0, "save_last": True}}]})
    fit(spec, backend)
    import ut_user_code

    log = ut_user_code.Recorder.log
    hooks = [h for h, _, _ in log]
    assert hooks[0] == "fit_start" and hooks[-1] == "fit_end"
    assert hooks.count("batch_end") == 90
    assert hooks.count("epoch_start") == hooks.count("epoch_end") == hooks.count("validation_end") == 2
    assert hooks.count("checkpoint_saved") == 2
    # epoch 1's hooks all come before epoch 2's and steps only grow
    assert [e for h, e, _ in log if h == "epoch_end"] == [1, 2]
    steps = [s for h, _, s in log if h == "batch_end"]
    assert steps == list(range(1, 91))
    first_val = hooks.index("validation_end")
    assert hooks[first_val - 1] == "batch_end" and hooks[first_val + 1] == "epoch_end"


def test_user_metric_is_logged(backend, make_spec, user_code):
    spec = make_spec({"metrics": ["accuracy", {"python": {"target": f"{user_code}:TopTwo"}}],
                      "callbacks": [{"early_stopping": {"monitor": "val/top2", "mode": "max", "patience": 5}}]})
    _, result = fit(spec, backend)
    assert result.metrics["val/top2"] >= result.metrics["val/accuracy"]
    columns, _ = read_csv(result.run_dir / "metrics.csv")
    assert "val/top2" in columns


def test_user_metric_monitor_typo_is_a_spec_error(backend, make_spec, user_code):
    spec = make_spec({"metrics": [{"python": {"target": f"{user_code}:TopTwo"}}],
                      "callbacks": [{"early_stopping": {"monitor": "val/top3"}}]})
    with pytest.raises(SpecError, match="val/top2"):
        fit(spec, backend)


def test_factory_model_from_spec(backend, make_spec, user_code, native_factory):
    factory = native_factory
    spec = make_spec({"model": {"arch": None, "factory": f"{user_code}:{factory}", "kwargs": {"width": 24}},
                      "trainer": {"max_epochs": 3}})
    trainer, result = fit(spec, backend)
    assert result.metrics["val/accuracy"] > 0.8
    weights = trainer._adapter.get_weights()
    assert sorted(v.size for v in weights.values()) == sorted([64 * 24, 24, 24 * 10, 10])


def test_factory_returning_a_non_module_fails_up_front(backend, make_spec, user_code, tmp_path):
    spec = make_spec({"model": {"arch": None, "factory": f"{user_code}:make_not_a_module"}})
    with pytest.raises(SpecError, match="torch.nn.Module"):
        fit(spec, backend)
    assert not any((tmp_path / "runs").rglob("summary.json"))  # nothing half-written left behind


def test_user_module_with_numpy_arrays_and_string_labels(backend, make_spec, user_code, native_factory):
    torch = pytest.importorskip("torch")
    import ut_user_code

    x, y = ut_user_code.xy_data()
    torch.manual_seed(0)
    net = getattr(ut_user_code, native_factory)(5, 2)
    trainer = UnifiedTrainer(make_spec({"optimizer": {"lr": 0.02}, "trainer": {"max_epochs": 15}}), backend=backend)
    result = trainer.fit(model=net, data=(x, y))
    assert result.metrics["val/accuracy"] > 0.7
    assert json.loads((result.run_dir / "classes.json").read_text()) == ["no", "yes"]
    out = trainer.predict(x[:7])
    assert out.shape == (7, 2)
    assert trainer.predict_labels(x[:7]) == ["no" if a > b else "yes" for a, b in out]
    ev = trainer.evaluate(data=(x, y))
    assert set(ev) == {"test/loss", "test/accuracy", "test/f1_macro"}


def test_torch_dataloaders(backend, make_spec, user_code):
    torch = pytest.importorskip("torch")
    import ut_user_code
    from torch.utils.data import DataLoader, TensorDataset

    if backend == "keras":
        pytest.skip("keras takes numpy arrays or the spec's data (native loaders: not yet)")

    x, y = ut_user_code.xy_data(200)
    yt = torch.from_numpy((y == "yes").astype("int64"))
    xt = torch.from_numpy(x)
    train = DataLoader(TensorDataset(xt[:160], yt[:160]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(xt[160:], yt[160:]), batch_size=16)
    trainer = UnifiedTrainer(make_spec({"trainer": {"max_epochs": 4}}), backend=backend)
    result = trainer.fit(model=ut_user_code.make_net(5, 2), data=(train, val))
    assert result.global_step == 40
    assert result.metrics["val/accuracy"] > 0.7


@pytest.mark.parametrize("task,source,keys", [
    ("binary", "sklearn:breast_cancer", ("val/accuracy", "val/auroc")),
    ("regression", "sklearn:diabetes", ("val/mse", "val/mae", "val/r2")),
])
def test_other_tasks(backend, make_spec, task, source, keys):
    spec = make_spec({"task": task, "data": {"source": source, "test_fraction": 0.1},
                      "optimizer": {"lr": 0.05}, "trainer": {"max_epochs": 25}})
    _, result = fit(spec, backend)
    for k in keys:
        assert math.isfinite(result.metrics[k]), k
    assert any(k.startswith("test/") for k in result.metrics)
    if task == "binary":
        assert result.metrics["val/auroc"] > 0.9
    else:
        assert result.metrics["val/r2"] > 0.2


def test_failure_in_a_callback_marks_the_run_failed(backend, make_spec, user_code, tmp_path):
    spec = make_spec({"trainer": {"max_epochs": 4},
                      "callbacks": [{"model_checkpoint": {}}, {"python": {"target": f"{user_code}:Exploder"}}]})
    trainer = UnifiedTrainer(spec, backend=backend)
    with pytest.raises(TrainingError, match="boom at epoch 2"):
        trainer.fit()
    summary = json.loads((trainer.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom" in summary["error"]
    assert (trainer.run_dir / "checkpoints" / "last.ckpt").exists()


def test_unsupported_feature_is_refused_before_training(backend, make_spec, tmp_path):
    from unified.registry import load_adapter

    spec = make_spec({"trainer": {"precision": "16-mixed"}})  # no backend trains float16 AMP on CPU
    if not load_adapter(backend).unsupported(load_spec(spec)):
        pytest.skip(f"{backend} supports 16-mixed")
    with pytest.raises(NotSupportedError, match="16-mixed"):
        fit(spec, backend)
    assert not (tmp_path / "runs").exists()


def test_progress_bar_on_and_off(backend, make_spec, capsys):
    fit(make_spec({"trainer": {"progress_bar": False}}), backend)
    assert "epoch 1/2" not in capsys.readouterr().err
    fit(make_spec({"trainer": {"progress_bar": True}}), backend)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "step 90/90" in err and "val/accuracy=" in err


def test_seed_changes_the_run(backend, make_spec):
    _, a = fit(make_spec({"trainer": {"max_steps": 5, "log_every_n_steps": 1}}), backend)
    _, b = fit(make_spec({"seed": 1, "trainer": {"max_steps": 5, "log_every_n_steps": 1}}), backend)
    la = [r["train/loss"] for r in read_csv(a.run_dir / "metrics.csv")[1] if r["train/loss"]]
    lb = [r["train/loss"] for r in read_csv(b.run_dir / "metrics.csv")[1] if r["train/loss"]]
    assert la != lb


def test_keras_refuses_a_second_tensor_backend_in_one_process(backend, make_spec):
    if backend != "keras":
        pytest.skip("keras only")
    import keras

    other = "torch" if keras.backend.backend() != "torch" else "tensorflow"
    with pytest.raises(NotSupportedError, match=f"--keras-backend {other}"):
        fit(make_spec({"keras_backend": other}), backend)


def test_impossible_model_backend_pair_fails_up_front(backend, make_spec, user_code, tmp_path):
    """A torch module on Keras/TensorFlow or a TensorFlow Keras model on a torch trainer: refused before training."""
    import sys

    if backend == "keras":
        if sys.modules["keras"].backend.backend() == "torch":
            pytest.skip("Keras on torch trains torch modules")
        factory, match = "make_net", "keras_backend 'torch'"
    else:
        if "keras" not in sys.modules or sys.modules["keras"].backend.backend() == "torch":
            pytest.skip("needs Keras loaded on a non-torch backend")
        factory, match = "make_keras_net", "KERAS_BACKEND=torch"
    with pytest.raises((SpecError, NotSupportedError), match=match):
        fit(make_spec({"model": {"arch": None, "factory": f"{user_code}:{factory}"}}), backend)
    assert not any((tmp_path / "runs").rglob("summary.json"))
