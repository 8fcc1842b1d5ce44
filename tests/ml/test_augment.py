"""The geometric part of the augmentation: crop-like zoom and aspect stretch do what the recipe says."""

from __future__ import annotations

import numpy as np
import pytest


def _box_image(batch: int = 64, size: int = 64) -> np.ndarray:
    """White square (rows and columns 24..39) on black: its extent measures the warp."""
    images = np.zeros((batch, size, size, 1), np.float32)
    images[:, 24:40, 24:40] = 1.0
    return images


def _extent(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Width and height (in pixels, thresholded at 0.5) of the bright square in each image."""
    bright = images[..., 0] > 0.5
    return bright.any(axis=1).sum(axis=1), bright.any(axis=2).sum(axis=1)


def _warp(**kwargs) -> np.ndarray:
    import tensorflow as tf

    from ml.training.augment import _affine

    tf.random.set_seed(7)
    return _affine(tf.constant(_box_image()), max_degrees=0.0, max_shift=0.0, **kwargs).numpy()


def test_zoom_in_only_magnifies_when_zoom_out_is_off():
    width, height = _extent(_warp(max_zoom=0.0, max_zoom_in=0.3))
    assert (width >= 16).all()
    assert (height >= 16).all()
    assert width.max() >= 19  # some images were magnified by well over 10 %
    np.testing.assert_array_equal(width, height)  # no stretch asked for: the square stays square


def test_stretch_changes_the_aspect_ratio_but_not_without_it():
    width, height = _extent(_warp(max_zoom=0.0, max_stretch=0.3))
    assert (width != height).mean() > 0.5
    assert (width > height).any()
    assert (width < height).any()
    plain_width, plain_height = _extent(_warp(max_zoom=0.0))
    np.testing.assert_array_equal(plain_width, 16)
    np.testing.assert_array_equal(plain_height, 16)


@pytest.mark.parametrize("max_stretch", [0.0, 0.12])
def test_augment_batch_keeps_shape_and_dtype_with_the_geometric_options(max_stretch):
    import tensorflow as tf

    from ml.training.augment import augment_batch

    images = (_box_image(8)[..., 0] * 255).astype(np.uint8)
    out = augment_batch(tf.constant(images), 1.0, max_zoom_in=0.25, max_stretch=max_stretch).numpy()
    assert out.dtype == np.uint8
    assert out.shape == images.shape
