"""The network contract: uint8 pixels in, two logits out, reachable feature map, exact reload."""

from __future__ import annotations

import numpy as np
import pytest

from ml.serving.heatmap import FEATURE_LAYERS
from ml.training.model import build_mobilenet, build_small_cnn


@pytest.fixture(scope="module")
def mobilenet():
    return build_mobilenet(weights=None)


def test_mobilenet_takes_uint8_images_and_returns_two_logits(mobilenet, fixture_images):
    out = mobilenet(fixture_images[:3], training=False)
    assert set(out) == {"pneumonia", "viral"}
    assert out["pneumonia"].shape == (3,)
    assert out["viral"].shape == (3,)
    assert mobilenet.inputs[0].dtype == "uint8"


def test_scaling_to_minus_one_one_is_inside_the_model(mobilenet):
    import keras

    scaled = keras.Model(mobilenet.inputs, mobilenet.get_layer("grey_to_rgb").output)
    out = np.asarray(scaled(np.array([[[0, 255]] * 2], np.uint8).repeat(112, 1).repeat(112, 2)))
    assert out.shape[-1] == 3
    assert out.min() == pytest.approx(-1.0)
    assert out.max() == pytest.approx(1.0)


def test_feature_map_for_grad_cam_is_reachable_by_name(mobilenet, fixture_images):
    import keras

    layer = mobilenet.get_layer(FEATURE_LAYERS["mobilenet_025"])
    features = keras.Model(mobilenet.inputs, layer.output)(fixture_images[:2])
    assert features.shape == (2, 7, 7, 256)


def test_saved_model_reloads_with_identical_outputs(tmp_path, fixture_images):
    import keras

    keras.utils.set_random_seed(5)
    model = build_small_cnn(width=4)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    before, after = model(fixture_images, training=False), reloaded(fixture_images, training=False)
    for name in ("pneumonia", "viral"):
        np.testing.assert_array_equal(np.asarray(before[name]), np.asarray(after[name]))
    assert reloaded.get_layer(FEATURE_LAYERS["small_cnn"]) is not None
