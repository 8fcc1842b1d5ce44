"""The hyper-parameter search's objective: worst-case stress figures at the card rule's threshold."""

from __future__ import annotations

import numpy as np
import pytest

from ml.training import perturb, tune


def logits_for(y: np.ndarray, rng, shifted: dict[str, float]) -> dict[str, np.ndarray]:
    clean = 3 * y + rng.normal(0, 1, y.size)
    out = {"clean": clean}
    for name in perturb.STRESS:
        out[name] = clean + rng.normal(0, 0.2, y.size) + shifted.get(name, 0.0)
    return out


def test_a_recipe_that_collapses_under_one_stress_condition_scores_lower():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    steady = tune.objective(y, logits_for(y, np.random.default_rng(1), {}))
    # A shape cue: a taller chest reads as pneumonia (v1's failure), clean AUC unchanged.
    fragile = tune.objective(y, logits_for(y, np.random.default_rng(1), {"stretch_y_10pct": 2.5}))
    assert fragile["clean_auc"] == pytest.approx(steady["clean_auc"])
    assert fragile["worst_specificity_condition"] == "stretch_y_10pct"
    assert fragile["worst_specificity"] < steady["worst_specificity"] - 0.2
    assert fragile["objective"] < steady["objective"]
    assert steady["objective"] == pytest.approx((steady["worst_sensitivity"] + steady["worst_specificity"]) / 2)


def test_the_results_table_lists_the_baseline_first_then_the_best_trials():
    row = {
        "learning_rate": 1e-3,
        "max_zoom_in": 0.4,
        "max_stretch": 0.35,
        "dropout": 0.2,
        "epochs": 4,
        "clean_auc": 0.99,
        "worst_sensitivity": 0.95,
        "worst_sensitivity_condition": "blur_2",
        "worst_specificity": 0.9,
        "worst_specificity_condition": "crop_10pct",
        "seconds": 60,
    }
    table = tune.markdown(
        row | {"trial": "v4 recipe", "objective": 0.925},
        [row | {"trial": "1", "objective": 0.80}, row | {"trial": "2", "objective": 0.93}],
    )
    trials = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert trials == ["v4 recipe", "2", "1"]
