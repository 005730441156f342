"""The digits task through the Python API, with a custom callback and a custom metric.

    python examples/train_digits.py [--backend lightning|ignite] [--epochs N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from unified import Callback, Metric, UnifiedTrainer, load_spec


class Top2Accuracy(Metric):
    """Share of samples whose true class is among the two highest logits."""

    name = "top2_accuracy"

    def reset(self) -> None:
        self.hits, self.count = 0, 0

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        top2 = np.argsort(outputs, axis=1)[:, -2:]
        self.hits += int((top2 == targets[:, None]).any(axis=1).sum())
        self.count += len(targets)

    def compute(self) -> float:
        return self.hits / self.count if self.count else float("nan")


class PrintBest(Callback):
    """Prints a line whenever validation accuracy improves."""

    def __init__(self) -> None:
        self.best = 0.0

    def on_validation_end(self, state, metrics) -> None:
        if metrics["val/accuracy"] > self.best:
            self.best = metrics["val/accuracy"]
            print(f"  epoch {state.epoch}: new best val/accuracy {self.best:.4f} (step {state.global_step})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    spec = load_spec(Path(__file__).with_name("digits.yaml"),
                     overrides={"trainer.max_epochs": args.epochs, "trainer.progress_bar": False})
    trainer = UnifiedTrainer(spec, backend=args.backend, callbacks=[PrintBest()])
    result = trainer.fit()
    print(f"{trainer.backend}: {result.status} after {result.epochs} epochs, "
          f"val/accuracy {result.metrics['val/accuracy']:.4f}, run directory {result.run_dir}")

    # The trained model answers for raw features (the spec's standardization is applied inside).
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    labels = trainer.predict_labels(x[:10])
    print("predicted:", labels, "true:", y[:10].tolist())
    top2 = Top2Accuracy()
    top2.update(trainer.predict(x), y)
    print(f"top-2 accuracy on all digits: {top2.compute():.4f}")


if __name__ == "__main__":
    main()
