"""Screening metrics with patient-level bootstrap confidence intervals.

AUC is computed from ranks (Mann-Whitney) rather than by calling
scikit-learn so that thousands of bootstrap replicates stay cheap; the tests
check it against ``sklearn.metrics.roc_auc_score``. Confidence intervals
resample *patients*, not images: several patients contribute more than one
(sometimes identical) image, and resampling images would pretend those were
independent evidence and make the intervals too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when a class is missing."""
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    y_true = np.asarray(y_true).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    return {
        "tn": int(np.sum(~y_true & ~predicted)),
        "fp": int(np.sum(~y_true & predicted)),
        "fn": int(np.sum(y_true & ~predicted)),
        "tp": int(np.sum(y_true & predicted)),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def at_threshold(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """Operating-point metrics; an image is called PNEUMONIA when ``probability >= threshold``."""
    counts = confusion(y_true, np.asarray(probability) >= threshold)
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    return {
        "threshold": float(threshold),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "confusion": counts,
    }


def threshold_for_sensitivity(y_true: np.ndarray, probability: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target`` (so specificity is as high as allowed)."""
    y_true = np.asarray(y_true).astype(bool)
    positives = np.sort(np.asarray(probability, dtype=np.float64)[y_true])[::-1]
    if positives.size == 0:
        raise ValueError("no positive cases: cannot set a sensitivity threshold")
    needed = int(np.ceil(target * positives.size - 1e-9))  # positives that must score >= threshold
    return float(positives[max(needed, 1) - 1])


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10, weights: np.ndarray | None = None
) -> float:
    """ECE with equal-width bins on P(pneumonia): sum over bins of |observed rate - mean probability| × share.

    ``weights`` re-weight the images, e.g. to measure calibration at another
    prevalence than the sample's (``prevalence_weights``).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    w = np.ones_like(probability) if weights is None else np.asarray(weights, dtype=np.float64)
    which = np.clip((probability * bins).astype(int), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            share = w[mask].sum() / w.sum()
            observed = np.average(y_true[mask], weights=w[mask])
            error += share * abs(observed - np.average(probability[mask], weights=w[mask]))
    return float(error)


def prevalence_weights(y_true: np.ndarray, prevalence: float) -> np.ndarray:
    """Image weights that make the weighted share of positives equal ``prevalence`` (same class-conditional mix)."""
    y_true = np.asarray(y_true).astype(bool)
    share = y_true.mean()
    return np.where(y_true, prevalence / share, (1 - prevalence) / (1 - share))


def reliability_table(y_true: np.ndarray, probability: np.ndarray, bins: int = 10) -> list[dict]:
    y_true = np.asarray(y_true, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    which = np.clip((probability * bins).astype(int), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        table.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "n": int(mask.sum()),
                "mean_probability": float(probability[mask].mean()) if mask.any() else None,
                "observed_rate": float(y_true[mask].mean()) if mask.any() else None,
            }
        )
    return table


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    groups: Sequence[str],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(indices)`` over resamples of whole groups (patients).

    ``statistic`` receives the image indices of one resample (with repeats)
    and returns a number; replicates that come out NaN (a class missing) are dropped.
    """
    groups = np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        chosen = rng.integers(0, unique.size, unique.size)
        indices = np.concatenate([members[g] for g in chosen])
        value = statistic(indices)
        if not np.isnan(value):
            values.append(value)
    if not values:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return (float(low), float(high))


def screening_report(
    y_true: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    groups: Sequence[str] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Everything ``metrics.json`` promises for the pneumonia output, with patient-bootstrap CIs."""
    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=np.float64)
    groups = np.asarray(groups if groups is not None else np.arange(y_true.size).astype(str))
    report = {
        "n": int(y_true.size),
        "n_pneumonia": int(y_true.sum()),
        "n_normal": int((1 - y_true).sum()),
        "n_patients": int(np.unique(groups).size),
    }
    report["auc"] = roc_auc(y_true, probability)
    report.update(at_threshold(y_true, probability, threshold))
    report["ece"] = expected_calibration_error(y_true, probability)
    report["auc_ci"] = list(bootstrap_ci(lambda i: roc_auc(y_true[i], probability[i]), groups, n_resamples, seed=seed))
    for key in ("sensitivity", "specificity"):
        report[f"{key}_ci"] = list(
            bootstrap_ci(
                lambda i, key=key: at_threshold(y_true[i], probability[i], threshold)[key],
                groups,
                n_resamples,
                seed=seed,
            )
        )
    return report


# Score distributions: the drift reference in the card and what monitoring compares with it.
BINS = 10


def shares(probabilities: np.ndarray, bins: int = BINS) -> list[float]:
    """Share of ``probabilities`` in each of ``bins`` equal-width bins of [0, 1] (1.0 falls in the last)."""
    which = np.clip((np.asarray(probabilities, dtype=np.float64) * bins).astype(int), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    return (counts / max(counts.sum(), 1)).tolist()
