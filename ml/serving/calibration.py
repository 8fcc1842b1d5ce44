"""Applying a model card's calibration: ``P = sigmoid(logit / T + bias)``.

Fitting the map needs scipy and lives in ``ml.training.calibration``; serving
only applies it, so a worker never imports scipy. Cards before v4 carry no
``bias``, which means 0.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def calibrated_probability(logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature + bias)
