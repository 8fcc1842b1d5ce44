"""Folding batch normalization into convolutions changes how fast a network runs, never what it answers."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from ml.serving import folding
from ml.serving.folding import fold_batch_norms, fold_input_scaling


def _with_trained_statistics(model, seed: int = 0):
    """Give every BatchNormalization non-trivial statistics, as training would."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 1, n), rng.uniform(0.2, 3, n)]
            )
    return model


def _small_network():
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    branch = keras.layers.Conv2D(16, 1, use_bias=True)(x)  # feeds two layers: its norm cannot be folded
    normed = keras.layers.BatchNormalization()(branch)
    x = keras.layers.Add()([normed, branch])
    x = keras.layers.Conv2D(4, 1, activation="relu")(x)  # activated: a norm after it would not fold
    x = keras.layers.BatchNormalization()(x)
    return _with_trained_statistics(keras.Model(image, keras.layers.GlobalAveragePooling2D()(x)))


def _norms(model) -> int:
    count = 0
    for layer in model.layers:
        count += _norms(layer) if isinstance(layer, keras.Model) else isinstance(layer, keras.layers.BatchNormalization)
    return count


def test_foldable_norms_disappear_and_the_outputs_stay():
    model = _small_network()
    probe = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)

    folded = fold_batch_norms(model, probe)

    assert folded is not model
    assert (_norms(model), _norms(folded)) == (4, 2)  # the shared branch and the activated conv keep theirs
    other = np.random.default_rng(2).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    assert np.allclose(model(other, training=False), folded(other, training=False), atol=1e-4)


def test_a_backbone_inside_a_wrapper_is_folded_too():
    backbone = _small_network()
    image = keras.Input((32, 32, 1))
    rgb = keras.layers.Concatenate()([image, image, image])
    wrapper = keras.Model(image, keras.layers.Dense(2)(backbone(rgb)))
    probe = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)

    folded = fold_batch_norms(wrapper, probe)

    assert (_norms(wrapper), _norms(folded)) == (4, 2)
    assert np.allclose(wrapper(probe, training=False), folded(probe, training=False), atol=1e-4)


def test_a_fold_that_would_change_an_answer_is_not_served(monkeypatch, caplog):
    model = _small_network()
    probe = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    wrong = folding._folded_weights

    def off_by_a_little(conv, norm):
        kernel, bias = wrong(conv, norm)
        return [kernel, bias + 0.01]

    monkeypatch.setattr(folding, "_folded_weights", off_by_a_little)
    with caplog.at_level(logging.WARNING, logger="ml.serving.folding"):
        assert fold_batch_norms(model, probe) is model
    assert "serving it unfolded" in caplog.text


def test_a_network_without_norms_is_served_as_it_is():
    image = keras.Input((8, 8, 1))
    model = keras.Model(image, keras.layers.Conv2D(2, 3)(image))
    assert fold_batch_norms(model, np.zeros((1, 8, 8, 1), np.float32)) is model


def _grey_network(size: int, stride: int, padding: str, use_bias: bool, copies: int = 3):
    """8-bit grey scaled to [-1, 1], copied into channels, then a convolution: how our models begin."""
    image = keras.Input((size, size), dtype="uint8")
    x = keras.layers.Reshape((size, size, 1))(image)
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = keras.layers.Concatenate()([scaled] * copies)
    x = keras.layers.Conv2D(6, 3, strides=stride, padding=padding, use_bias=use_bias)(x)
    x = keras.layers.ReLU(6.0)(x)
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 1)(x)))
    rng = np.random.default_rng(size + stride)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


@pytest.mark.parametrize(
    ("size", "stride", "padding", "use_bias", "copies"),
    [
        (16, 2, "same", False, 3),
        (15, 2, "same", True, 3),
        (17, 1, "same", False, 3),
        (16, 2, "valid", True, 3),
        (16, 2, "same", True, 1),
    ],
)
def test_the_input_scaling_folds_into_the_first_convolution_borders_included(size, stride, padding, use_bias, copies):
    """Odd and even sizes pad differently under "same"; an image with bright borders shows any mistake there."""
    model = _grey_network(size, stride, padding, use_bias, copies)
    rng = np.random.default_rng(3)
    probe = rng.integers(0, 256, (4, size, size), dtype=np.uint8)

    folded = fold_input_scaling(model, probe)

    assert folded is not model
    assert folded.get_layer(model.layers[4].name).kernel.shape[2] == 1  # one channel read, not the copies
    others = rng.integers(0, 256, (6, size, size), dtype=np.uint8)
    others[:, 0, :] = others[:, -1, :] = others[:, :, 0] = others[:, :, -1] = 255
    assert np.allclose(model(others, training=False), folded(others, training=False), atol=1e-4)


def test_an_input_fold_that_would_change_an_answer_is_not_served(monkeypatch, caplog):
    model = _grey_network(16, 2, "same", False)
    monkeypatch.setattr(folding, "_same_padding", lambda size, kernel, stride: (1, 0))  # the wrong border
    probe = np.random.default_rng(1).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="ml.serving.folding"):
        assert fold_input_scaling(model, probe) is model
    assert "serving it unfolded" in caplog.text


def test_a_network_that_does_not_begin_that_way_is_served_as_it_is():
    image = keras.Input((8, 8, 1))
    scaled = keras.layers.Rescaling(1 / 255)(image)
    model = keras.Model(image, keras.layers.Conv2D(2, 3, activation="relu")(scaled))  # no copies; activated
    assert fold_input_scaling(model, np.zeros((1, 8, 8, 1), np.float32)) is model


@pytest.mark.parametrize("part", ["model", "gate"])
def test_the_shipped_networks_are_served_folded_with_the_same_answers(part):
    from ml.serving import gate as gates
    from ml.serving import pipeline
    from ml.serving.inference import Screener, current_model_dir
    from tests.ml.conftest import XRAY

    images = np.stack([pipeline.prepare(str(p)).pixels for p in sorted(XRAY.rglob("*.jpeg"))[:8]])
    if part == "model":
        network = Screener.load(current_model_dir()).model
        original = keras.models.load_model(current_model_dir() / "model.keras", compile=False)
    else:
        served = gates.ChestXrayGate.load()
        network = served._feature_model
        original = gates.build_feature_model(resolution=int(served.card["resolution"]))
        original.load_weights(str(gates.DEFAULT_GATE_DIR / gates.BACKBONE_FILE))
        images = images[..., None].astype(np.float32)
    assert _norms(original) == 27
    assert _norms(network) == 0
    if part == "model":  # the first convolution reads the grey image itself, not three scaled copies
        assert (original.get_layer("conv1").kernel.shape[2], network.get_layer("conv1").kernel.shape[2]) == (3, 1)
    for a, b in zip(
        keras.tree.flatten(original(images, training=False)),
        keras.tree.flatten(network(images, training=False)),
        strict=True,
    ):
        assert np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-3


def test_heatmaps_of_the_served_model_are_those_of_the_model_as_trained():
    """The heatmap reads a feature layer inside the network; folding must leave that layer's output as it was."""
    from ml.serving import pipeline
    from ml.serving.heatmap import ExplainingScreener
    from ml.serving.inference import Screener, current_model_dir
    from tests.ml.conftest import XRAY

    images = np.stack([pipeline.prepare(str(p)).pixels for p in sorted(XRAY.rglob("*.jpeg"))[:6]])
    served = Screener.load(current_model_dir())
    trained = Screener(keras.models.load_model(current_model_dir() / "model.keras", compile=False), served.card)
    for a, b in zip(
        ExplainingScreener(trained).explain(images), ExplainingScreener(served).explain(images), strict=True
    ):
        assert abs(a.prediction.probability - b.prediction.probability) < 1e-5
        assert np.max(np.abs(a.heatmap - b.heatmap)) < 1e-3
        assert a.outside_lungs == pytest.approx(b.outside_lungs, abs=1e-4)
