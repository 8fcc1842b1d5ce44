"""Operating-threshold rules: how a validation set (and its perturbed copies) becomes one threshold.

Every rule aims at sensitivity >= ``TARGET_SENSITIVITY`` on images it has not
seen; they differ in how much specificity they give away for safety. v1-v4
used ``min_mild`` (the lowest of the ten 97 %-points over clean and the nine
mild perturbations), which on new pediatric data kept sensitivity at
0.990 but gave specificity 0.872 where the ROC allowed 0.92 at 0.97: the
single most pessimistic perturbation (``blur_1`` for v4) set it.
``ml.evaluation.cv_report`` scores each rule on held-out halves of all eight
cross-validation folds; ``CHOSEN`` is the one that report picked, and the
one ``finalize`` writes into new cards.

Rules work on any monotone score (logits or calibrated P): they only compare
scores, so they commute with the card's calibration.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ml.statistics.metrics import threshold_for_sensitivity
from ml.training import perturb

TARGET_SENSITIVITY = 0.97

Rule = Callable[[np.ndarray, np.ndarray, dict], float]


def _mild_points(y: np.ndarray, clean: np.ndarray, perturbed: dict, target: float = TARGET_SENSITIVITY) -> np.ndarray:
    points = [threshold_for_sensitivity(y, clean, target)]
    points += [threshold_for_sensitivity(y, perturbed[name], target) for name in perturb.MILD]
    return np.array(points)


def _pooled(y: np.ndarray, clean: np.ndarray, perturbed: dict, names, target: float) -> float:
    scores = np.concatenate([clean, *(perturbed[n] for n in names)])
    return threshold_for_sensitivity(np.tile(y, 1 + len(names)), scores, target)


def candidate_points(y: np.ndarray, clean: np.ndarray, perturbed: dict) -> dict[str, float]:
    """The per-condition 97 %-sensitivity thresholds the quantile rules summarise (recorded in cards)."""
    points = _mild_points(y, clean, perturbed)
    return dict(zip(["clean", *perturb.MILD], (float(p) for p in points), strict=False))


RULES: dict[str, tuple[str, Rule]] = {
    "clean": (
        "highest threshold with sensitivity >= 0.97 on clean validation",
        lambda y, c, p: threshold_for_sensitivity(y, c, TARGET_SENSITIVITY),
    ),
    "clean_98": (
        "highest threshold with sensitivity >= 0.98 on clean validation (a one-point margin)",
        lambda y, c, p: threshold_for_sensitivity(y, c, 0.98),
    ),
    "clean_99": (
        "highest threshold with sensitivity >= 0.99 on clean validation (a two-point margin)",
        lambda y, c, p: threshold_for_sensitivity(y, c, 0.99),
    ),
    "min_mild": (
        "min over clean and the 9 mildly perturbed validation copies of the highest threshold with "
        "sensitivity >= 0.97 (v1-v4)",
        lambda y, c, p: float(_mild_points(y, c, p).min()),
    ),
    "q25_mild": (
        "lower quartile (3rd lowest of 10) over clean and the 9 mild copies of the per-condition "
        "97 %-sensitivity thresholds",
        lambda y, c, p: float(np.quantile(_mild_points(y, c, p), 0.25, method="lower")),
    ),
    "median_mild": (
        "lower median (5th of 10) over clean and the 9 mild copies of the per-condition 97 %-sensitivity thresholds",
        lambda y, c, p: float(np.quantile(_mild_points(y, c, p), 0.5, method="lower")),
    ),
    "pooled_mild": (
        "highest threshold with sensitivity >= 0.97 on clean and the 9 mild copies pooled",
        lambda y, c, p: _pooled(y, c, p, list(perturb.MILD), TARGET_SENSITIVITY),
    ),
    "pooled_all": (
        "highest threshold with sensitivity >= 0.97 on clean and all 20 stress copies pooled",
        lambda y, c, p: _pooled(y, c, p, [n for n in p if n in perturb.STRESS], TARGET_SENSITIVITY),
    ),
}

CHOSEN = "q25_mild"  # ml.evaluation.cv_report over the 8 folds of v4's recipe, ml/README.md


def threshold(rule: str, y: np.ndarray, clean: np.ndarray, perturbed: dict) -> float:
    return RULES[rule][1](np.asarray(y), np.asarray(clean), perturbed)


def describe(rule: str) -> str:
    return f"{rule}: {RULES[rule][0]}"
