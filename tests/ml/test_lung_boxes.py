"""The hand-drawn lung boxes on validation images: what the heatmap figures of ml/README.md are measured against."""

from __future__ import annotations

from collections import Counter

import pytest

from ml.evaluation import lung_boxes
from ml.evaluation.lung_boxes import centre_inside
from ml.evaluation.lung_field_fit import coverage
from ml.training.runs import DEFAULT_MANIFEST
from ml.training.split import file_sha256, read_manifest


@pytest.fixture(scope="module")
def document():
    return lung_boxes.load()


def test_sixty_validation_images_half_normal_one_per_patient(document):
    assert document["manifest_sha256"] == file_sha256(DEFAULT_MANIFEST)
    rows = {r["path"]: r for r in read_manifest(DEFAULT_MANIFEST)}
    images = document["images"]
    assert Counter(e["label"] for e in images) == {"NORMAL": 30, "PNEUMONIA": 30}
    assert all(rows[e["path"]]["role"] == "val" for e in images), "annotations must be on images no model trained on"
    assert len({rows[e["path"]]["patient"] for e in images}) == len(images)


def test_every_image_has_two_plausible_lungs_image_left_first(document):
    for entry in document["images"]:
        left, right = lung_boxes.lungs_of(entry)
        for x0, y0, x1, y1 in (left, right):
            assert 0 <= x0 < x1 <= 1
            assert 0 <= y0 < y1 <= 1
            assert 0.1 <= x1 - x0 <= 0.5, entry["path"]
            assert 0.2 <= y1 - y0 <= 1, entry["path"]
        assert (left[0] + left[2]) / 2 < 0.5 < (right[0] + right[2]) / 2, entry["path"]
        assert left[2] <= right[0] + 0.02, f"{entry['path']}: the lungs overlap"


def test_cell_coverage_and_centre_rule():
    lungs = [(0.1, 0.2, 0.4, 0.8), (0.6, 0.2, 0.9, 0.8)]
    grid = coverage(lungs, 14)
    assert grid.shape == (14, 14)
    assert grid[7, 3] == 1.0
    assert grid[7, 7] == 0.0
    assert grid[0, 0] == 0.0
    assert centre_inside((0.2, 0.3, 0.3, 0.5), lungs)
    assert not centre_inside((0.2, 0.3, 0.8, 0.5), lungs)  # a box across both lungs centres on the mediastinum
    assert not centre_inside(None, lungs)


def test_the_fitted_head_finds_a_synthetic_lung_from_features_and_position():
    """Folding the standardisation into the weights must give serving the probabilities the fit meant."""
    import numpy as np

    from ml.evaluation.lung_field_fit import design, fit_head, lung_probability

    rng = np.random.default_rng(0)
    n, grid, channels = 40, 14, 8
    truth = np.zeros((n, grid, grid))
    truth[:, 3:11, 2:6] = 1.0
    truth[:, 3:11, 8:12] = 1.0
    features = rng.normal(5.0, 2.0, (n, grid, grid, channels))
    features[..., 0] += 4.0 * truth  # one channel lights up on lung, on a large offset and scale
    w, b = fit_head(design(features[:30], True), truth[:30].reshape(-1))
    p = lung_probability(features[30:], w, b, True)
    assert p[truth[30:] == 1].mean() > 0.8
    assert p[truth[30:] == 0].mean() < 0.2
