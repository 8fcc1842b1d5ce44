"""The model folder named by ml/models/CURRENT: what the worker will actually serve."""

from __future__ import annotations

import json

import numpy as np

from ml.serving.inference import Screener, current_model_dir


def test_shipped_model_serves_the_fixtures(fixture_images, fixture_records):
    folder = current_model_dir()
    card = json.loads((folder / "card.json").read_text())
    for key in (
        "version",
        "architecture",
        "input_size",
        "threshold",
        "temperature",
        "validation",
        "training",
        "intended_use",
        "limitations",
        "feature_layer",
    ):
        assert key in card
    assert (folder / "model.keras").stat().st_size < 50 * 1024 * 1024
    screener = Screener.load(folder)
    predictions = screener.predict(fixture_images)
    assert all(0.0 <= p.probability <= 1.0 and p.viral_probability is not None for p in predictions)
    # A working model separates these eight clear-cut fixtures; a broken preprocessing path would not.
    scores = np.array([p.probability for p in predictions])
    y = np.array([r.target for r in fixture_records])
    assert scores[y == 1].min() > scores[y == 0].max()
