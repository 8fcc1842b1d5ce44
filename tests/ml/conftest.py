"""Shared fixtures for the ML tests: real fixture X-rays and a tiny saved model.

Nothing here reads ../shared; the tiny model is a randomly initialised
compact CNN, so tests exercise the real save/load/serve path in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
XRAY = FIXTURES / "xray"
ORIGINALS = FIXTURES / "originals"


@pytest.fixture(scope="session")
def fixture_records():
    from ml.training.data import scan_folder

    return scan_folder(XRAY)


@pytest.fixture(scope="session")
def fixture_images(fixture_records):
    from ml.training.data import load_inputs

    return load_inputs(XRAY, fixture_records)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved model folder (model.keras + card.json) with a 4-filter CNN, threshold 0.5, temperature 2."""
    import keras

    from ml.training.model import build_small_cnn

    keras.utils.set_random_seed(0)
    model = build_small_cnn(width=4)
    folder = tmp_path_factory.mktemp("models") / "tiny-v0"
    folder.mkdir()
    model.save(folder / "model.keras")
    card = {
        "version": "tiny-v0",
        "architecture": "small_cnn",
        "input_size": 224,
        "threshold": 0.5,
        "temperature": 2.0,
        "feature_layer": "last_conv",
    }
    (folder / "card.json").write_text(json.dumps(card))
    return folder


SMALL_SIZE = 64  # training mechanics do not need full resolution; keeps those tests fast on 2 cores


@pytest.fixture
def tiny_model():
    """A fresh, seeded 4-filter compact CNN at 64 px (each test may train it)."""
    import keras

    from ml.training.model import build_small_cnn

    keras.utils.set_random_seed(1)
    return build_small_cnn(size=SMALL_SIZE, width=4, dropout=0.0, internal_size=None)


@pytest.fixture(scope="session")
def small_images(fixture_images):
    from ml.serving.preprocess import squash_to_input

    return np.stack([squash_to_input(image, SMALL_SIZE) for image in fixture_images])
