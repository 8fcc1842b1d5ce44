"""Fitting the calibration: make the pneumonia logit's probabilities honest on validation.

Class weighting and early stopping leave a network over- or under-confident;
a monotone map of the logit fitted on validation fixes that without moving the
ranking (AUC is unchanged), so the operating threshold can be chosen on
calibrated probabilities and reported as one. Two maps:

- temperature scaling, ``sigmoid(logit / T)``: one scalar, fixes the scale;
- Platt scaling, ``sigmoid(logit / T + bias)``: also moves the 50 % point.
  Class-balanced training centres the logit for a 50:50 prior while validation
  is ~74 % pneumonia, and a temperature alone cannot undo that offset: on the
  cross-validation fold 2 of v4's recipe it left ECE at 0.138 where Platt
  scaling reaches 0.017. Cards from v4 on carry a ``bias``; older cards have
  none, which means 0.

Applying the fitted map is ``ml.serving.calibration`` (numpy only).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar

TEMPERATURE_BOUNDS = (0.05, 20.0)
BIAS_BOUNDS = (-10.0, 10.0)


def binary_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0, bias: float = 0.0) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature + bias
    y = np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature in [0.05, 20] minimising the validation negative log-likelihood."""
    result = minimize_scalar(
        lambda log_t: binary_nll(logits, y_true, float(np.exp(log_t))),
        bounds=tuple(np.log(TEMPERATURE_BOUNDS)),
        method="bounded",
    )
    return float(np.exp(result.x))


def fit_platt(logits: np.ndarray, y_true: np.ndarray) -> tuple[float, float]:
    """(temperature, bias) minimising the negative log-likelihood of ``sigmoid(logit / T + bias)``."""
    start = np.array([np.log(fit_temperature(logits, y_true)), 0.0])
    result = minimize(
        lambda p: binary_nll(logits, y_true, float(np.exp(p[0])), float(p[1])),
        start,
        method="L-BFGS-B",
        bounds=[tuple(np.log(TEMPERATURE_BOUNDS)), BIAS_BOUNDS],
    )
    return float(np.exp(result.x[0])), float(result.x[1])
