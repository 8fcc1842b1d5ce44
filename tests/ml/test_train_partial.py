"""Fine-tuning the top of a network from cached activations (``ml.training.train_partial``).

The tiny compact CNN stands in for Xception: the cut, the caching and the
copy-sampling training loop are the same code whatever the backbone.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.training.feature_cache import activations
from ml.training.train import TrainConfig, fit, targets
from ml.training.train_partial import split_at

CUT = "conv3a"


def test_bottom_then_top_is_the_whole_model(tiny_model, small_images):
    bottom, top = split_at(tiny_model, CUT)
    whole = tiny_model(small_images, training=False)
    halves = top(bottom(small_images, training=False), training=False)
    for name in ("pneumonia", "viral"):
        np.testing.assert_allclose(np.asarray(halves[name]), np.asarray(whole[name]), rtol=1e-5, atol=1e-5)
    assert {layer.name for layer in top.layers}.isdisjoint({layer.name for layer in bottom.layers[1:]})


def test_cached_activations_match_the_bottom_and_augmented_copies_differ(tiny_model, small_images):
    bottom, _ = split_at(tiny_model, CUT)
    clean = activations(bottom, small_images, None, seed=0)
    assert clean.dtype == np.float16
    np.testing.assert_allclose(clean, np.asarray(bottom(small_images, training=False)), rtol=2e-3, atol=2e-3)
    augmented = activations(bottom, small_images, {"max_zoom_in": 0.25, "max_stretch": 0.35}, seed=1)
    assert augmented.shape == clean.shape
    assert not np.allclose(augmented, clean)


def test_training_the_top_on_cached_copies_moves_only_the_top_and_keeps_the_best_epoch(
    tiny_model, fixture_records, small_images
):
    import tensorflow as tf

    from ml.serving.inference import batched_logits
    from ml.statistics.metrics import roc_auc

    bottom, top = split_at(tiny_model, CUT)
    for layer in tiny_model.layers:
        layer.trainable = False
    for layer in top.layers:
        layer.trainable = True
    copies = [activations(bottom, small_images, None, 0), activations(bottom, small_images, {}, 1)]
    bottom_before = [w.copy() for w in bottom.get_weights()]
    y, viral = targets(fixture_records)
    forward = tf.function(lambda x: top(x, training=False))
    config = TrainConfig(epochs=3, patience=3, batch_size=4, learning_rate=3e-3)
    history = fit(top, copies, y, viral, copies[0].astype(np.float32), y, viral, config, augment=False, forward=forward)
    assert len(history) == 3
    for old, new in zip(bottom_before, bottom.get_weights(), strict=False):
        np.testing.assert_array_equal(old, new)
    best = max(history, key=lambda h: (h["val_auc"], -h["val_loss"]))
    restored = batched_logits(forward, copies[0].astype(np.float32))["pneumonia"]
    assert roc_auc(y, restored) == pytest.approx(best["val_auc"])
    whole = np.asarray(tiny_model(small_images, training=False)["pneumonia"])
    np.testing.assert_allclose(whole, restored, rtol=2e-2, atol=2e-2)


def test_frozen_candidate_features_are_the_pool_layer_output(tiny_model, small_images):
    import keras

    from ml.training.train_frozen import pooled_features

    features = pooled_features(tiny_model, small_images, augment=False, seed=0)
    pool = keras.Model(tiny_model.inputs, tiny_model.get_layer("pool").output)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, np.asarray(pool(small_images, training=False)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled_features(tiny_model, small_images, augment=True, seed=1), features)
