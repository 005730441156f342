"""What migrated code passes to the facade: LightningModules, DataLoaders, Keras models with probability
outputs and tf.data, FitResult.history, evaluate/predict on loaders."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris

from unified import NotSupportedError, UnifiedTrainer

TORCH_BACKENDS = ("lightning", "ignite")


def iris():
    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    idx = np.random.default_rng(0).permutation(len(x))
    return x[idx[:120]], y[idx[:120]], x[idx[120:]], y[idx[120:]]


def spec(tmp_path, **trainer):
    return {"name": "m", "trainer": {"max_epochs": 2, "progress_bar": False, **trainer},
            "logging": {"dir": str(tmp_path / "runs")}}


def lightning_module(manual=False, lr=0.123):
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = not manual
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
            self.steps = 0

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            self.steps += 1
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return {"loss": loss}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    return Lit()


def loaders():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y, xv, yv = iris()
    train = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), batch_size=64)
    return train, val


def test_lightning_module_steps_and_optimizer_are_honoured(backend, tmp_path):
    if backend not in TORCH_BACKENDS:
        pytest.skip("a LightningModule trains on the torch backends")
    import torch

    torch.manual_seed(0)
    model = lightning_module()
    trainer = UnifiedTrainer(spec(tmp_path), backend=backend)
    train, val = loaders()
    result = trainer.fit(model=model, data=(train, val))
    assert model.steps == result.global_step == 2 * len(train)  # its training_step ran every step
    assert result.metrics["lr"] == pytest.approx(0.123)  # its configure_optimizers' optimizer
    assert len(result.history["val/loss"]) == 2 and result.history["val/loss"][-1] == result.metrics["val/loss"]
    assert (result.run_dir / "summary.json").exists()
    # evaluate / predict on native loaders
    ev = trainer.evaluate("test", data=val)
    assert set(ev) >= {"test/loss", "test/accuracy"} and ev["test/loss"] == pytest.approx(result.metrics["val/loss"])
    assert trainer.predict(val).shape == (30, 3)


def test_lightning_module_agrees_across_torch_backends(tmp_path):
    from unified.registry import installed_backends

    if not set(TORCH_BACKENDS) <= set(installed_backends()):
        pytest.skip("needs lightning and ignite")
    import torch

    losses = []
    for b in TORCH_BACKENDS:
        torch.manual_seed(0)
        model = lightning_module(lr=0.05)
        train, val = loaders()
        torch.manual_seed(1)  # the same shuffle order for both
        losses.append(UnifiedTrainer(spec(tmp_path / b), backend=b).fit(model=model, data=(train, val)).metrics)
    assert losses[0]["val/loss"] == pytest.approx(losses[1]["val/loss"], rel=1e-5)


def test_manual_optimization_is_refused_up_front(backend, tmp_path):
    if backend not in TORCH_BACKENDS:
        pytest.skip("a LightningModule trains on the torch backends")
    train, val = loaders()
    with pytest.raises(NotSupportedError, match="manual optimization"):
        UnifiedTrainer(spec(tmp_path), backend=backend).fit(model=lightning_module(manual=True), data=(train, val))


def test_keras_softmax_model_with_tf_data(tmp_path):
    from unified.registry import installed_backends

    if "keras" not in installed_backends():
        pytest.skip("keras is not installed")
    from unified.adapters.keras import import_keras

    keras = import_keras("tensorflow")
    import tensorflow as tf

    x, y, xv, yv = iris()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    trainer = UnifiedTrainer({**spec(tmp_path, max_epochs=15), "optimizer": {"name": "adam", "lr": 0.02},
                              "data": {"batch_size": 16}}, backend="keras")
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(8)
    result = trainer.fit(model=model, data=(train_ds, val_ds))
    assert result.metrics["val/accuracy"] > 0.8
    probs = trainer.predict(xv)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)  # the model's own softmax outputs
    # val/loss is the cross-entropy of those probabilities (not of softmax(probabilities))
    ce = float(np.mean(-np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-7, 1.0))))
    assert result.metrics["val/loss"] == pytest.approx(ce, rel=1e-4)
    assert len(result.history["val/accuracy"]) == 15
    assert trainer.evaluate(data=val_ds)["test/loss"] == pytest.approx(ce, rel=1e-4)
