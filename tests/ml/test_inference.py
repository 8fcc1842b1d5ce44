"""Screener: the API the worker calls."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ml.serving.calibration import sigmoid
from ml.serving.inference import Prediction, Screener, current_model_dir


@pytest.fixture(scope="module")
def screener(tiny_model_dir):
    return Screener.load(tiny_model_dir)


def test_predict_on_fixtures_gives_probabilities_and_labels(screener, fixture_images):
    predictions = screener.predict(fixture_images)
    assert len(predictions) == len(fixture_images)
    for prediction in predictions:
        assert isinstance(prediction, Prediction)
        assert 0.0 <= prediction.probability <= 1.0
        assert prediction.label == ("PNEUMONIA" if prediction.probability >= screener.threshold else "NORMAL")
        assert isinstance(prediction.viral_probability, float)
        assert 0.0 <= prediction.viral_probability <= 1.0


def test_predict_applies_the_card_temperature(screener, fixture_images):
    logits = screener.logits(fixture_images)["pneumonia"]
    probabilities = [p.probability for p in screener.predict(fixture_images)]
    np.testing.assert_allclose(probabilities, sigmoid(logits / 2.0), rtol=1e-6)
    assert not np.allclose(probabilities, sigmoid(logits))  # the temperature really changes the scores


def test_predict_and_explain_apply_the_card_bias(tiny_model_dir, tmp_path, fixture_images):
    import json

    from ml.serving.heatmap import ExplainingScreener

    folder = tmp_path / "tiny-platt"
    shutil.copytree(tiny_model_dir, folder)
    card = json.loads((folder / "card.json").read_text()) | {"bias": 1.25, "feature_layer": "last_conv"}
    (folder / "card.json").write_text(json.dumps(card))
    platt = Screener.load(folder)
    logits = platt.logits(fixture_images)["pneumonia"]
    expected = sigmoid(logits / 2.0 + 1.25)
    np.testing.assert_allclose([p.probability for p in platt.predict(fixture_images)], expected, rtol=1e-6)
    explained = ExplainingScreener(platt).explain(fixture_images)
    np.testing.assert_allclose([e.prediction.probability for e in explained], expected, rtol=1e-4, atol=1e-6)


def test_batch_and_single_image_agree(screener, fixture_images):
    together = [p.probability for p in screener.predict(fixture_images)]
    alone = [screener.predict(fixture_images[i : i + 1])[0].probability for i in range(len(fixture_images))]
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)


def test_screener_exposes_card_fields(screener):
    assert (screener.version, screener.threshold, screener.temperature, screener.input_size) == (
        "tiny-v0",
        0.5,
        2.0,
        224,
    )
    assert screener.card["feature_layer"] == "last_conv"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((224, 224), np.uint8), "shape"),
        (np.zeros((0, 224, 224), np.uint8), "N >= 1"),
        (np.zeros((2, 128, 128), np.uint8), "shape"),
        (np.zeros((2, 224, 224, 3), np.uint8), "shape"),
        (np.zeros((2, 224, 224), np.float32), "uint8"),
        ([[0]], "numpy array"),
    ],
)
def test_predict_rejects_wrong_input_with_a_clear_message(screener, bad, message):
    with pytest.raises(ValueError, match=message):
        screener.predict(bad)


def test_current_model_dir_follows_the_pointer(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "tiny-v0")
    (tmp_path / "CURRENT").write_text("tiny-v0\n")
    assert current_model_dir(tmp_path) == tmp_path / "tiny-v0"


def test_current_model_dir_explains_a_missing_or_dangling_pointer(tmp_path):
    with pytest.raises(FileNotFoundError, match="CURRENT"):
        current_model_dir(tmp_path)
    (tmp_path / "CURRENT").write_text("v404\n")
    with pytest.raises(FileNotFoundError, match="v404"):
        current_model_dir(tmp_path)
