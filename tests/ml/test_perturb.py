"""Stress-test perturbations and the robust operating threshold built on them."""

from __future__ import annotations

import numpy as np
import pytest

from ml.statistics.metrics import at_threshold
from ml.training import perturb
from ml.training.finalize import TARGET_SENSITIVITY, choose_threshold


@pytest.mark.parametrize("name", sorted(perturb.STRESS))
def test_each_perturbation_keeps_the_input_contract_and_changes_the_image(name, fixture_images):
    image = fixture_images[0]
    out = perturb.STRESS[name](image)
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 0.2
    np.testing.assert_array_equal(out, perturb.STRESS[name](image))  # deterministic


def test_robust_threshold_keeps_target_sensitivity_on_every_mild_condition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    clean = np.clip(0.5 * y + rng.normal(0.25, 0.2, 500), 0, 1)
    perturbed = {name: np.clip(clean + rng.normal(0, 0.1, 500), 0, 1) for name in perturb.MILD}
    threshold, candidates = choose_threshold(y, clean, perturbed, rule="min_mild")
    assert threshold == min(candidates.values())
    assert threshold < candidates["clean"]
    for probability in [clean, *perturbed.values()]:
        assert at_threshold(y, probability, threshold)["sensitivity"] >= TARGET_SENSITIVITY
