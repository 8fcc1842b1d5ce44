"""Applying a model card's calibration: ``P = sigmoid(logit / T + bias)``.

Fitting the map needs scipy and lives in ``ml.training.calibration``; serving
only applies it, so a worker never imports scipy. Cards before v4 carry no
``bias``, which means 0.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def calibrated_probability(logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature + bias)


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def shift_prevalence(probability: np.ndarray, calibrated_for: float, site: float) -> np.ndarray:
    """Probabilities calibrated at prevalence ``calibrated_for``, re-expressed for a site's ``site`` prevalence.

    Prior shift (Saerens et al. 2002): with the same class-conditional image
    statistics, only the prior odds change, so the logit moves by the
    difference of the two prior log-odds. Monotone: the ranking, and hence
    AUC and any operating point mapped through it, are unchanged.
    """
    shift = logit(np.float64(site)) - logit(np.float64(calibrated_for))
    return sigmoid(logit(probability) + shift)
