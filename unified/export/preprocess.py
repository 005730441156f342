"""What an exported model needs besides its weights: input width, standardization, labels (numpy only).

``preprocess.json`` in a run directory holds it (written when the run starts), so ``unified export
RUN_DIR`` can rebuild the model and bake the standardization into the exported graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from unified.errors import SpecError
from unified.files import atomic_write_json

PREPROCESS_FILE = "preprocess.json"
PROBE_ROWS = 64  # rows of the verification probe batch


@dataclass
class Preprocess:
    """The model's input contract: raw features in, standardized inside the exported graph.

    Attributes:
        in_features: number of raw input features.
        out_features: model output width.
        task: ``classification``, ``binary`` or ``regression``.
        mean, std: float32 standardization fitted on the train split, broadcasting over one sample: ``[F]``
            per feature (tables, sequences) or ``[C, 1, 1]`` per channel (images); ``None``: off.
        sample_shape: one input sample's shape (``[in_features]`` for a table; ``[C, H, W]``, ``[T, F]``,
            ``[T]``); the model input is ``[batch, *sample_shape]``.
        input_dtype: ``float32``, or ``int64`` for token ids (never standardized).
        feature_names: the input columns, in order.
        classes: the original class labels in class-index order (``None`` for regression).
        model_from: ``spec`` (rebuildable from ``spec.yaml``) or ``fit(model=...)`` (only in-process).
        image: ``{"size": [H, W], "channels": C}`` for a model trained on ``imagefolder:`` (None otherwise):
            an image file becomes one raw sample with ``unified.data.images.load_image(src, size=...,
            channels=...)`` (float32 ``[C, H, W]`` in ``[0, 1]``), then :meth:`apply` standardizes it.
    """

    in_features: int
    out_features: int
    task: str
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None
    feature_names: list[str] = field(default_factory=list)
    classes: Optional[list] = None
    model_from: str = "spec"
    sample_shape: Optional[list[int]] = None
    input_dtype: str = "float32"
    image: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.sample_shape is None:
            self.sample_shape = [int(self.in_features)]

    @property
    def input_shape(self) -> list[int]:
        """The model input's shape with ``-1`` for the batch axis."""
        return [-1, *map(int, self.sample_shape or [self.in_features])]

    @classmethod
    def from_dataset(cls, dataset: Any, model_from: str = "spec") -> "Preprocess":
        """Read the contract off a :class:`unified.data.Dataset`."""
        return cls(in_features=dataset.in_features, out_features=dataset.out_features, task=dataset.task,
                   mean=dataset.mean, std=dataset.std, feature_names=list(dataset.feature_names),
                   classes=dataset.classes, model_from=model_from,
                   sample_shape=list(getattr(dataset, "sample_shape", (dataset.in_features,))),
                   input_dtype=getattr(dataset, "input_dtype", "float32"), image=_image(getattr(dataset, "image", None)))

    @property
    def standardize(self) -> bool:
        return self.mean is not None and self.std is not None

    def apply(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw features -> model input, exactly as :meth:`unified.data.Dataset.transform` computes it."""
        x = np.asarray(x_raw)
        if self.input_dtype == "int64":
            return np.ascontiguousarray(x, dtype=np.int64)
        if not self.standardize:
            return np.ascontiguousarray(x, dtype=np.float32)
        assert self.mean is not None and self.std is not None
        out = (x.astype(np.float64) - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        return np.ascontiguousarray(out, dtype=np.float32)

    def unapply(self, x_model: np.ndarray) -> np.ndarray:
        """Model input -> raw features (float32; token ids stay int64): recovers raw rows from a standardized split."""
        if self.input_dtype == "int64":
            return np.ascontiguousarray(x_model, dtype=np.int64)
        x = np.asarray(x_model, dtype=np.float64)
        if self.standardize:
            assert self.mean is not None and self.std is not None
            x = x * self.std.astype(np.float64) + self.mean.astype(np.float64)
        return np.ascontiguousarray(x, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features, "out_features": self.out_features, "task": self.task,
            "standardize": self.standardize,
            "mean": None if self.mean is None else np.asarray(self.mean, dtype=np.float64).tolist(),
            "std": None if self.std is None else np.asarray(self.std, dtype=np.float64).tolist(),
            "feature_names": list(self.feature_names), "classes": self.classes, "model_from": self.model_from,
            "sample_shape": list(self.sample_shape or [self.in_features]), "input_dtype": self.input_dtype,
            "image": _image(self.image),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = PREPROCESS_FILE) -> "Preprocess":
        try:
            mean, std = data.get("mean"), data.get("std")
            return cls(in_features=int(data["in_features"]), out_features=int(data["out_features"]),
                       task=str(data["task"]),
                       mean=None if mean is None else np.asarray(mean, dtype=np.float32),
                       std=None if std is None else np.asarray(std, dtype=np.float32),
                       feature_names=[str(n) for n in data.get("feature_names") or []],
                       classes=data.get("classes"), model_from=str(data.get("model_from", "spec")),
                       sample_shape=[int(d) for d in data["sample_shape"]] if data.get("sample_shape") else None,
                       input_dtype=str(data.get("input_dtype", "float32")), image=_image(data.get("image")))
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"{where}: not a valid preprocessing file ({type(e).__name__}: {e})") from None

    def save(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / PREPROCESS_FILE, self.to_dict())

    @classmethod
    def load(cls, run_dir: Path) -> Optional["Preprocess"]:
        """The run's ``preprocess.json``, or ``None`` when the run predates it."""
        path = Path(run_dir) / PREPROCESS_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SpecError(f"{path}: cannot read ({e})") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))


def _image(value: Any) -> Optional[dict[str, Any]]:
    """``{"size": [H, W], "channels": C}`` with plain ints (None stays None)."""
    if value is None:
        return None
    return {"size": [int(v) for v in value["size"]], "channels": int(value["channels"])}


def probe_from_dataset(dataset: Any, pre: Preprocess, rows: int = PROBE_ROWS) -> tuple[np.ndarray, str]:
    """A raw-feature probe batch from the validation split (else test, else train) and its name.

    A split that is not in RAM gives its rows through ``Dataset.fetch`` (decoded image files, a memory map's
    rows; the train split as augmented in epoch 0: any rows serve as a probe).
    """
    for name in ("val", "test", "train"):
        part = getattr(dataset, name, None)
        if part is not None and len(part):
            n = min(rows, len(part))
            x = part.x[:n] if getattr(part, "in_memory", True) else dataset.fetch(name, np.arange(n))[0]
            return pre.unapply(x), f"{name} split, first {n} rows"
    raise SpecError("no data to draw a verification probe from")


def synthetic_probe(pre: Preprocess, seed: int, rows: int = PROBE_ROWS) -> np.ndarray:
    """Raw-looking rows ``mean + std * N(0, 1)`` when the run's data cannot be read any more."""
    rng = np.random.default_rng([int(seed), 7])
    shape = (rows, *map(int, pre.sample_shape or [pre.in_features]))
    if pre.input_dtype == "int64":  # token ids: small ids every vocabulary has
        return rng.integers(0, 2, size=shape).astype(np.int64)
    return pre.unapply(rng.standard_normal(shape))
