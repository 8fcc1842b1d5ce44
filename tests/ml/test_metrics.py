"""Metrics must agree with scikit-learn and with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, recall_score, roc_auc_score

from ml.serving.calibration import calibrated_probability
from ml.statistics.metrics import (
    at_threshold,
    bootstrap_ci,
    expected_calibration_error,
    roc_auc,
    screening_report,
    threshold_for_sensitivity,
)
from ml.training.calibration import binary_nll, fit_temperature


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    scores = np.round(y * 0.8 + rng.normal(0, 0.7, 400), 1)  # rounding creates ties
    return y, scores


def test_auc_matches_sklearn_with_ties(scored):
    y, scores = scored
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auc_is_nan_with_one_class():
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_operating_point_matches_sklearn(scored):
    y, scores = scored
    p = 1 / (1 + np.exp(-scores))
    point = at_threshold(y, p, 0.6)
    predicted = (p >= 0.6).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted).ravel()
    assert point["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert point["sensitivity"] == pytest.approx(recall_score(y, predicted))
    assert point["specificity"] == pytest.approx(recall_score(1 - y, 1 - predicted))
    assert point["ppv"] == pytest.approx(tp / (tp + fp))
    assert point["npv"] == pytest.approx(tn / (tn + fn))


def test_threshold_for_sensitivity_is_the_highest_that_reaches_the_target(scored):
    y, scores = scored
    threshold = threshold_for_sensitivity(y, scores, 0.97)
    assert at_threshold(y, scores, threshold)["sensitivity"] >= 0.97
    higher = np.min(scores[scores > threshold])
    assert at_threshold(y, scores, higher)["sensitivity"] < 0.97


def test_ece_on_a_hand_computed_example():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    # bin 0: rate 0 vs 0.05; bin 9: rate 1 vs 0.95; bin 5: rate 1 vs 0.55
    expected = 2 / 5 * 0.05 + 2 / 5 * 0.05 + 1 / 5 * 0.45
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_patient_bootstrap_ci_brackets_the_estimate_and_widens_with_duplicates(scored):
    y, scores = scored
    estimate = roc_auc(y, scores)
    low, high = bootstrap_ci(lambda i: roc_auc(y[i], scores[i]), np.arange(len(y)).astype(str), 300)
    assert low < estimate < high
    # Ten copies of every image, grouped by patient, carry no more evidence: the CI must not shrink 3x.
    y10, s10 = np.repeat(y, 10), np.repeat(scores, 10)
    groups = np.repeat(np.arange(len(y)), 10).astype(str)
    low10, high10 = bootstrap_ci(lambda i: roc_auc(y10[i], s10[i]), groups, 300)
    assert (high10 - low10) > 0.6 * (high - low)


def test_screening_report_has_every_key(scored):
    y, scores = scored
    report = screening_report(y, 1 / (1 + np.exp(-scores)), 0.5, n_resamples=50)
    for key in (
        "n",
        "auc",
        "auc_ci",
        "sensitivity",
        "specificity",
        "accuracy",
        "ppv",
        "npv",
        "threshold",
        "ece",
        "confusion",
    ):
        assert key in report


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 20000)
    y = rng.random(20000) < calibrated_probability(logits, 2.5)
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(2.5, rel=0.08)
    assert binary_nll(logits, y, temperature) < binary_nll(logits, y, 1.0)


def test_platt_scaling_recovers_a_known_temperature_and_bias():
    from ml.training.calibration import fit_platt

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, 40000)
    y = rng.random(logits.size) < calibrated_probability(logits, 2.0, 1.5)
    temperature, bias = fit_platt(logits, y)
    assert temperature == pytest.approx(2.0, rel=0.05)
    assert bias == pytest.approx(1.5, abs=0.06)
    # a temperature alone cannot move the 50 % point, so it fits this data worse
    assert binary_nll(logits, y, temperature, bias) < binary_nll(logits, y, fit_temperature(logits, y)) - 0.01


def test_a_card_without_a_bias_means_zero():
    logits = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(calibrated_probability(logits, 1.5), calibrated_probability(logits, 1.5, 0.0))
