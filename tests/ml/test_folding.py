"""Folding batch normalization into convolutions changes how fast a network runs, never what it answers."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from ml.serving import folding
from ml.serving.folding import fold_batch_norms


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
    assert _norms(original) == 27 and _norms(network) == 0
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
