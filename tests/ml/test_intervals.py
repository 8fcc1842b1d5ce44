"""Intervals a site's adoption rests on: exact for proportions, score-based for the AUC."""

import numpy as np
import pytest
from scipy.stats import binomtest

from ml.statistics.intervals import auc_score_interval, clopper_pearson, pneumonia_needed, sensitivity_threshold
from ml.statistics.metrics import roc_auc


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (30, 30), (99, 100), (484, 494)])
def test_clopper_pearson_agrees_with_scipys_exact_binomial_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_clopper_pearson_refuses_impossible_counts_and_is_undefined_without_trials():
    with pytest.raises(ValueError, match="between 0 and 5"):
        clopper_pearson(6, 5)
    assert all(np.isnan(clopper_pearson(0, 0)))


def test_a_perfect_auc_on_a_small_sample_keeps_its_width():
    low, high = auc_score_interval(1.0, 20, 20)
    assert high == 1.0
    assert 0.85 < low < 0.90
    assert auc_score_interval(1.0, 150, 150)[0] > low  # more cases, a tighter bound


def test_the_auc_interval_holds_its_estimate_stays_in_range_and_mirrors():
    for auc, m, n in [(0.5, 10, 10), (0.9, 100, 100), (0.97, 30, 200), (0.0, 12, 7)]:
        low, high = auc_score_interval(auc, m, n)
        assert 0.0 <= low <= auc <= high <= 1.0
        mirrored = auc_score_interval(1 - auc, m, n)
        assert mirrored == pytest.approx((1 - high, 1 - low), abs=1e-9)


def test_the_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
    """Binormal scores with a true AUC of 0.90 (unit variances, means 1.8124 apart), 40 + 40 cases."""
    rng = np.random.default_rng(7)
    separation = 1.8124  # Phi(separation / sqrt(2)) = 0.90
    covered = 0
    for _ in range(400):
        y = np.r_[np.ones(40), np.zeros(40)].astype(bool)
        scores = np.r_[rng.normal(separation, 1, 40), rng.normal(0, 1, 40)]
        low, high = auc_score_interval(roc_auc(y, scores), 40, 40)
        covered += low <= 0.90 <= high
    assert 0.92 <= covered / 400 <= 0.99


def test_the_sensitivity_threshold_is_the_highest_whose_exact_bound_reaches_the_target():
    y = np.r_[np.ones(100), np.zeros(50)].astype(bool)
    p = np.r_[np.linspace(0.99, 0.40, 100), np.linspace(0.0, 0.5, 50)]
    threshold, caught = sensitivity_threshold(y, p, 0.90)
    assert clopper_pearson(caught, 100)[0] >= 0.90 > clopper_pearson(caught - 1, 100)[0]
    assert threshold == pytest.approx(np.sort(p[y])[::-1][caught - 1])
    assert sensitivity_threshold(y, p, 0.99) is None  # 100 of 100 bounds at 0.964
    assert pneumonia_needed(0.99) == 368
    assert clopper_pearson(368, 368)[0] >= 0.99 > clopper_pearson(367, 367)[0]
