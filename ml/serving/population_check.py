"""Population check: does this frontal chest X-ray look like a child's (the validated population)?

The pneumonia model was trained and validated on children aged 1-5 only; its
output on an adult film has never been checked, so the service should say so
rather than score it silently. This module turns the gate's backbone features
(``ChestXrayGate.scores(...)["features"]``, computed anyway for every image:
no extra network pass) into P(adult) with a logistic regression fitted by
``ml.training.population_fit``, and flags images at the card's threshold.

    gate = ChestXrayGate.load(); check = PopulationCheck.load()
    s = gate.scores(images, colourfulness=colours)
    verdicts = gate.verdicts(s)
    outside = check.flag(s["features"])  # True: outside the validated population

It is a screen for "not a young child", not an age estimate: older children
and adolescents were never in its training data, and the card gives the
measured rates per adult source. Numpy and h5py only, so serving needs no
scikit-learn; the features must come from the gate version named in the card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ml.serving.calibration import sigmoid

POPULATION_VERSION = "population-v1"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "models" / POPULATION_VERSION
PARAMS_FILE = "params.h5"
CARD_FILE = "card.json"
PARAM_NAMES = ("mean", "scale", "coef", "intercept")


def transform(features: np.ndarray) -> np.ndarray:
    """Square root of the (non-negative, ReLU6) backbone activations, as the gate's own density uses."""
    return np.sqrt(np.maximum(np.asarray(features, dtype=np.float64), 0.0))


class PopulationCheck:
    """Fitted parameters plus the card; stateless, cheap (one dot product per image)."""

    def __init__(self, params: dict[str, np.ndarray], card: dict):
        self.card = card
        self.version = str(card["version"])
        self.gate_version = str(card["gate_version"])
        self.threshold_logit = float(card["threshold_logit"])
        self._mean = np.asarray(params["mean"], np.float64)
        self._scale = np.asarray(params["scale"], np.float64)
        self._coef = np.asarray(params["coef"], np.float64)
        self._intercept = float(np.asarray(params["intercept"]).reshape(-1)[0])
        if not self._mean.shape == self._scale.shape == self._coef.shape:
            raise ValueError(f"{self.version}: mean, scale and coef must have the same shape")

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None) -> PopulationCheck:
        """Load a population folder (default: the shipped ``ml/models/population-v1``)."""
        folder = Path(folder) if folder is not None else DEFAULT_DIR
        card_path = folder / CARD_FILE
        if not card_path.is_file():
            raise FileNotFoundError(f"no population card at {card_path}")
        return cls(load_params(folder / PARAMS_FILE), json.loads(card_path.read_text()))

    @property
    def threshold(self) -> float:
        """The flagging threshold as a probability (``flag`` compares logits; the two agree)."""
        return float(sigmoid(self.threshold_logit))

    @property
    def width(self) -> int:
        return int(self._coef.shape[0])

    def logit(self, features: np.ndarray) -> np.ndarray:
        """Logit of P(adult) for (N, width) gate features."""
        features = self._check(features)
        z = (transform(features) - self._mean) / self._scale
        return z @ self._coef + self._intercept

    def adult_probability(self, features: np.ndarray) -> np.ndarray:
        """P(adult), (N,), for (N, width) gate features.

        Uncalibrated: adults and children weighed equally in fitting, so it ranks; the card's threshold decides.
        """
        return sigmoid(self.logit(features))

    def flag(self, features: np.ndarray) -> np.ndarray:
        """(N,) bool: True where the image looks outside the validated population."""
        return self.logit(features) >= self.threshold_logit

    def _check(self, features) -> np.ndarray:
        if not isinstance(features, np.ndarray):
            raise ValueError(f"features must be a numpy array, got {type(features).__name__}")  # noqa: TRY004
        if features.ndim != 2 or features.shape[1] != self.width:
            raise ValueError(
                f"features must have shape (N, {self.width}) (ChestXrayGate.scores(...)['features'] of "
                f"{self.gate_version}), got {features.shape}"
            )
        if not np.issubdtype(features.dtype, np.floating) or not np.all(np.isfinite(features)):
            raise ValueError("features must be finite floats")
        return features


def load_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        return {name: np.asarray(handle[name]) for name in PARAM_NAMES}


def save_params(path: str | os.PathLike, params: dict[str, np.ndarray]) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name in PARAM_NAMES:
            handle.create_dataset(name, data=np.asarray(params[name], dtype=np.float64))
