"""Confidence intervals that stay honest on small or perfectly separated samples.

A site validation is exactly where a percentile bootstrap fails: 20 + 20
cases that the model separates perfectly give AUC 1.000 with the interval
1.000-1.000, because every resample separates them too. A hospital must not
be able to adopt an operating point on such evidence, so the figures a
clinical lead signs use intervals whose width comes from the sample size:

- proportions (sensitivity, specificity, PPV, NPV): the exact Clopper-Pearson
  interval, which never claims more than the binomial allows (30 of 30 caught
  gives a lower bound of 0.884, not 1.0);
- AUC: Newcombe's score interval (method 5 of Newcombe, Stat Med
  2006;25:559-573), a Wilson-type interval on the Mann-Whitney statistic with
  the Hanley-McNeil variance, which stays inside [0, 1] and keeps a width at
  AUC 1.0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import beta, norm


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion; (nan, nan) with no trials."""
    if trials <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, got {successes}")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return (low, high)


_EDGE = 1e-12


def _newcombe_variance(theta: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil variance of the AUC at ``theta``, with Newcombe's symmetric (m+n)/2 - 1 in place of m-1, n-1."""
    star = (n_pos + n_neg) / 2 - 1
    return theta * (1 - theta) / (n_pos * n_neg) * (1 + star * (1 - theta) / (2 - theta) + star * theta / (1 + theta))


def auc_score_interval(auc: float, n_pos: int, n_neg: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's method-5 interval: the AUCs ``theta`` with ``|auc - theta| <= z * sd(theta)``.

    Solved for each end by root finding; at AUC 1.0 the upper end is 1.0 and
    the lower end is where the distance to 1 equals z standard deviations.
    """
    if n_pos < 1 or n_neg < 1 or math.isnan(auc):
        return (float("nan"), float("nan"))
    z = float(norm.ppf(1 - (1 - confidence) / 2))

    def gap(theta: float) -> float:
        return (auc - theta) ** 2 - z * z * _newcombe_variance(theta, n_pos, n_neg)

    # gap() is negative just inside the estimate (the variance vanishes only at 0 and 1, hence the
    # nudge there) and positive at 0 or 1 unless that end belongs to the interval.
    inside = min(max(auc, _EDGE), 1 - _EDGE)
    low = brentq(gap, 0.0, inside) if gap(0.0) > 0 else 0.0
    high = brentq(gap, inside, 1.0) if gap(1.0) > 0 else 1.0
    return (float(low), float(high))


def sensitivity_threshold(
    y_true: np.ndarray, probability: np.ndarray, target: float, confidence: float = 0.95
) -> tuple[float, int] | None:
    """The highest threshold whose sensitivity's exact lower bound reaches ``target``, and the cases it catches.

    ``None`` when no threshold does, not even one that catches every
    pneumonia (too few pneumonia cases for the target). A case is positive
    when ``probability >= threshold``, as everywhere in the service.
    """
    y_true = np.asarray(y_true).astype(bool)
    positives = np.sort(np.asarray(probability, dtype=np.float64)[y_true])[::-1]
    n = positives.size
    for caught in range(1, n + 1):
        if clopper_pearson(caught, n, confidence)[0] >= target:
            threshold = float(positives[caught - 1])
            # Ties below the k-th score are caught too; report what the threshold really catches.
            return threshold, int(np.sum(positives >= threshold))
    return None


def pneumonia_needed(target: float, confidence: float = 0.95, limit: int = 100_000) -> int:
    """The fewest pneumonia cases that, all caught, give an exact lower bound reaching ``target``."""
    for n in range(1, limit + 1):
        if clopper_pearson(n, n, confidence)[0] >= target:
            return n
    raise ValueError(f"no sample of up to {limit} cases reaches a lower bound of {target}")
