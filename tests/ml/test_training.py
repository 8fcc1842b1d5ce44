"""Training mechanics on the fixture images: the loss goes down, the best epoch is kept."""

from __future__ import annotations

import numpy as np
import pytest

from ml.training.train import TrainConfig, class_weights, fit, make_train_step, targets


def test_targets_mark_normal_images_as_having_no_subtype(fixture_records):
    y, viral = targets(fixture_records)
    for record, target, v in zip(fixture_records, y, viral, strict=False):
        assert target == (record.label == "PNEUMONIA")
        assert v == {"normal": -1.0, "bacteria": 0.0, "virus": 1.0}[record.subtype]


def test_class_weights_give_both_classes_equal_total_weight():
    y = np.array([1, 1, 1, 0])
    w_normal, w_pneumonia = class_weights(y)
    assert w_normal * 1 == pytest.approx(w_pneumonia * 3)


def test_a_few_steps_lower_the_loss(tiny_model, fixture_records, small_images):
    import keras
    import tensorflow as tf

    y, viral = targets(fixture_records)
    step = make_train_step(
        tiny_model,
        keras.optimizers.Adam(3e-3),
        class_weights(y),
        class_weights(viral[viral >= 0]),
        TrainConfig(),
        augment=False,
    )
    images, y, viral = tf.constant(small_images), tf.constant(y), tf.constant(viral)
    losses = [float(step(images, y, viral)) for _ in range(12)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * losses[0]


def test_augmented_step_runs_and_keeps_uint8_input(tiny_model, fixture_records, small_images):
    import keras

    from ml.training.augment import augment_batch

    out = augment_batch(small_images).numpy()
    assert out.dtype == np.uint8
    assert out.shape == small_images.shape
    assert not np.array_equal(out, small_images)
    y, viral = targets(fixture_records)
    step = make_train_step(tiny_model, keras.optimizers.Adam(1e-3), class_weights(y), (1.0, 1.0), TrainConfig())
    assert np.isfinite(float(step(small_images, y, viral)))


def test_fit_keeps_the_best_epoch(tiny_model, fixture_records, small_images, tmp_path):
    y, viral = targets(fixture_records)
    config = TrainConfig(arch="small_cnn", epochs=3, patience=2, batch_size=4, learning_rate=3e-3)
    history = fit(
        tiny_model,
        small_images,
        y,
        viral,
        small_images,
        y,
        viral,
        config,
        checkpoint=tmp_path / "best.weights.h5",
        augment=False,
    )
    assert 1 <= len(history) <= 3
    assert (tmp_path / "best.weights.h5").is_file()
    best = max(history, key=lambda h: (h["val_auc"], -h["val_loss"]))
    from ml.serving.inference import batched_logits, compiled_forward
    from ml.statistics.metrics import roc_auc

    restored = batched_logits(compiled_forward(tiny_model), small_images)["pneumonia"]
    assert roc_auc(y, restored) == pytest.approx(best["val_auc"])


def test_class_weights_of_a_single_class_are_neutral():
    assert class_weights(np.ones(5)) == (1.0, 1.0)


def test_viral_specialist_trains_only_the_viral_head(tiny_model, fixture_records, small_images):
    import keras

    from ml.training.train import pneumonia_only

    chosen = [i for i, r in enumerate(fixture_records) if r in pneumonia_only(fixture_records)]
    y, viral = targets([fixture_records[i] for i in chosen])
    assert y.min() == 1.0
    assert set(viral) == {0.0, 1.0}
    before = [w.copy() for w in tiny_model.get_layer("pneumonia_logit").get_weights()]
    viral_before = [w.copy() for w in tiny_model.get_layer("viral_logit").get_weights()]
    step = make_train_step(
        tiny_model,
        keras.optimizers.Adam(3e-3),
        class_weights(y),
        class_weights(viral),
        TrainConfig(task="viral"),
        augment=False,
    )
    for _ in range(3):
        step(small_images[chosen], y, viral)
    for old, new in zip(before, tiny_model.get_layer("pneumonia_logit").get_weights(), strict=False):
        np.testing.assert_array_equal(old, new)
    assert any(
        not np.array_equal(o, n)
        for o, n in zip(viral_before, tiny_model.get_layer("viral_logit").get_weights(), strict=False)
    )


def test_viral_specialist_keeps_the_epoch_with_the_best_viral_auc(tiny_model, fixture_records, small_images):
    from ml.serving.inference import batched_logits, compiled_forward
    from ml.statistics.metrics import roc_auc
    from ml.training.train import pneumonia_only

    chosen = [i for i, r in enumerate(fixture_records) if r in pneumonia_only(fixture_records)]
    images = small_images[chosen]
    y, viral = targets([fixture_records[i] for i in chosen])
    config = TrainConfig(arch="small_cnn", epochs=3, patience=3, batch_size=4, learning_rate=3e-3, task="viral")
    history = fit(tiny_model, images, y, viral, images, y, viral, config, augment=False)
    best = max(history, key=lambda h: (h["val_viral_auc"], -h["val_viral_loss"]))
    restored = batched_logits(compiled_forward(tiny_model), images)["viral"]
    assert roc_auc(viral, restored) == pytest.approx(best["val_viral_auc"])
