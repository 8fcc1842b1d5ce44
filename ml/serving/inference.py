"""Serving: load a shipped model folder once, score batches of squashed images.

The worker imports only this module. A model folder holds ``model.keras``
(uint8 pixels in, logits out; scaling and grey-to-RGB are inside) and
``card.json`` (version, operating threshold, temperature and bias, metrics).
The calibration and threshold travel with the weights, so a model can never be
served with another model's operating point.

    screener = Screener.load(current_model_dir())
    predictions = screener.predict(batch)  # batch: (N, 224, 224) uint8 from squash_to_input
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.calibration import calibrated_probability, sigmoid
from ml.serving.folding import fold_batch_norms, fold_input_scaling

MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"
CHUNK = 64  # images per compiled call: bounds memory for large batches without retracing


@dataclass(frozen=True)
class Prediction:
    probability: float  # calibrated P(pneumonia), 0..1
    label: str  # "PNEUMONIA" or "NORMAL" at the model's operating threshold
    viral_probability: float | None  # P(viral | pneumonia); None if the model has no such output


def current_model_dir(models_root: str | os.PathLike = MODELS_ROOT) -> Path:
    """The model folder named by ``<models_root>/CURRENT`` (one line: the version folder name)."""
    models_root = Path(models_root)
    pointer = models_root / "CURRENT"
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{pointer} is missing: it must name the model version to serve") from None
    folder = models_root / name
    if not name or "/" in name or not (folder / "model.keras").is_file():
        raise FileNotFoundError(f"{pointer} names {name!r}, but {folder}/model.keras does not exist")
    return folder


def compiled_forward(model):
    """One traced graph for any batch size: ``uint8 (N, s, s)`` → dict of logits."""
    import tensorflow as tf

    size = int(model.inputs[0].shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8)], reduce_retracing=True)
    def forward(images):
        return model(images, training=False)

    return forward


def batched_logits(forward, images: np.ndarray, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), chunk):
        for name, value in forward(images[start : start + chunk]).items():
            parts.setdefault(name, []).append(np.asarray(value, dtype=np.float64).reshape(-1))
    return {name: np.concatenate(values) for name, values in parts.items()}


class Screener:
    """A loaded model plus its card; create it once per worker process, after the fork."""

    def __init__(self, model, card: dict):
        self.model = model
        self.card = card
        self.version = str(card["version"])
        self.threshold = float(card["threshold"])
        self.temperature = float(card["temperature"])
        self.bias = float(card.get("bias", 0.0))  # Platt offset; cards before v4 have none
        self.input_size = int(card["input_size"])
        self.has_viral_output = "viral" in model.output_names if hasattr(model, "output_names") else False
        self._forward = compiled_forward(model)

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> Screener:
        import keras

        model_dir = Path(model_dir)
        card = json.loads((model_dir / "card.json").read_text())
        model = keras.models.load_model(model_dir / "model.keras", compile=False)
        size = int(card["input_size"])
        probe = np.random.default_rng(0).integers(0, 256, (4, size, size), dtype=np.uint8)
        return cls(fold_input_scaling(fold_batch_norms(model, probe), probe), card)

    def _check(self, images: np.ndarray) -> None:
        expected = (self.input_size, self.input_size)
        if not isinstance(images, np.ndarray):
            # ValueError, not TypeError: the worker's contract is one exception type for any bad batch.
            raise ValueError(f"images must be a numpy array, got {type(images).__name__}")  # noqa: TRY004
        if images.ndim != 3 or images.shape[1:] != expected or images.shape[0] < 1:
            raise ValueError(
                f"images must have shape (N, {expected[0]}, {expected[1]}) with N >= 1 "
                f"(squash_to_input output, stacked), got {images.shape}"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 grey pixels from squash_to_input, got dtype {images.dtype}")

    def logits(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw logits per output, before temperature (evaluation and stress tests use these)."""
        self._check(images)
        return batched_logits(self._forward, images)

    def calibrate(self, pneumonia_logits: np.ndarray) -> np.ndarray:
        """P(pneumonia) from raw logits with the card's calibration: the one place that applies it."""
        return calibrated_probability(pneumonia_logits, self.temperature, self.bias)

    def probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated P(pneumonia) and P(viral | pneumonia) (None without a viral output)."""
        logits = self.logits(images)
        probability = self.calibrate(logits["pneumonia"])
        viral = sigmoid(logits["viral"]) if "viral" in logits else None
        return probability, viral

    def predict(self, images: np.ndarray) -> list[Prediction]:
        probability, viral = self.probabilities(images)
        return [
            Prediction(
                probability=float(p),
                label="PNEUMONIA" if p >= self.threshold else "NORMAL",
                viral_probability=None if viral is None else float(viral[i]),
            )
            for i, p in enumerate(probability)
        ]
