"""Temperature scaling: one scalar that makes the pneumonia logit's probabilities honest.

Class weighting and early stopping leave a network over- or under-confident;
dividing the logit by a temperature fitted on validation fixes the scale
without moving the ranking (AUC is unchanged), so the operating threshold can
be chosen on calibrated probabilities and reported as one.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def binary_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature in [0.05, 20] minimising the validation negative log-likelihood."""
    result = minimize_scalar(
        lambda log_t: binary_nll(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def calibrated_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)
