"""Training-time augmentation suited to chest X-rays, on uint8 batches.

Geometry stays anatomical: small rotations, shifts and zoom in ONE affine
resampling (stacking three transforms would blur three times), never vertical
flips and no horizontal flips either (the heart is on the left). Photometry is
deliberately strong, because exposure, contrast curve, resolution, noise and
compression are what differ between hospitals: gamma, contrast, brightness,
down-and-up resampling, Gaussian noise and JPEG re-encoding. The output is
uint8 again, exactly the kind of input the model receives when serving.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _affine(
    images: tf.Tensor,
    max_degrees: float,
    max_shift: float,
    max_zoom: float,
    max_zoom_in: float | None = None,
    max_stretch: float = 0.0,
) -> tf.Tensor:
    """Rotate, shift, zoom (scale > 1 magnifies, i.e. crops) and stretch one axis, in one resampling.

    ``max_zoom_in`` widens the zoom range on the magnifying side only (tighter
    collimation); ``max_stretch`` scales x and y by different factors, so the
    model cannot lean on the aspect-ratio distortion that squashing leaves
    behind (normal originals are squarer than pneumonia ones).
    """
    batch = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    angle = tf.random.uniform([batch], -max_degrees, max_degrees) * (math.pi / 180.0)
    scale = tf.random.uniform([batch], 1.0 - max_zoom, 1.0 + (max_zoom if max_zoom_in is None else max_zoom_in))
    if max_stretch > 0:  # drawn only when asked for, so v1's recipe replays the same random stream
        stretch = tf.sqrt(tf.exp(tf.random.uniform([batch], -max_stretch, max_stretch)))
        scale_x, scale_y = scale * stretch, scale / stretch
    else:
        scale_x = scale_y = scale
    shift_x = tf.random.uniform([batch], -max_shift, max_shift) * width
    shift_y = tf.random.uniform([batch], -max_shift, max_shift) * height
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # Output pixel (x, y) samples the input at  c + R(angle)·S⁻¹·((x, y) − c) − shift.
    a0, a1 = tf.cos(angle) / scale_x, -tf.sin(angle) / scale_y
    b0, b1 = tf.sin(angle) / scale_x, tf.cos(angle) / scale_y
    a2 = cx - a0 * cx - a1 * cy - shift_x
    b2 = cy - b0 * cx - b1 * cy - shift_y
    zeros = tf.zeros([batch])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def _per_image(batch: tf.Tensor, probability: float) -> tf.Tensor:
    """A (B, 1, 1, 1) mask choosing which images of the batch get a transform."""
    return tf.cast(tf.random.uniform([batch, 1, 1, 1]) < probability, tf.float32)


def augment_batch(
    images: tf.Tensor, strength: float = 1.0, max_zoom_in: float | None = None, max_stretch: float = 0.0
) -> tf.Tensor:
    """uint8 (B, H, W) → augmented uint8 (B, H, W).

    The defaults are v1's recipe; ``max_zoom_in`` and ``max_stretch`` (see
    ``_affine``) add crop-like zoom and anisotropic scaling.
    """
    size = tf.shape(images)[1:3]
    batch = tf.shape(images)[0]
    x = tf.cast(images, tf.float32)[..., None] / 255.0
    x = _affine(
        x,
        max_degrees=7.0 * strength,
        max_shift=0.06 * strength,
        max_zoom=0.10 * strength,
        max_zoom_in=max_zoom_in,
        max_stretch=max_stretch,
    )

    # Exposure: gamma, then contrast about the image mean, then brightness.
    log_gamma = tf.random.uniform([batch, 1, 1, 1], -0.4, 0.4) * strength
    x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), tf.exp(log_gamma))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    factor = tf.exp(tf.random.uniform([batch, 1, 1, 1], -0.35, 0.35) * strength)
    x = (x - mean) * factor + mean + tf.random.uniform([batch, 1, 1, 1], -0.08, 0.08) * strength

    # Resolution: a third of the images go down to 96..200 px and back up (one size per batch).
    side = tf.random.uniform([], 96, 200, dtype=tf.int32)
    low = tf.image.resize(tf.image.resize(x, [side, side], antialias=True), size)
    mask = _per_image(batch, 0.33 * strength)
    x = mask * low + (1.0 - mask) * x

    # Sensor noise on a third of the images.
    sigma = tf.random.uniform([batch, 1, 1, 1], 0.0, 0.03) * _per_image(batch, 0.33 * strength)
    x = x + sigma * tf.random.normal(tf.shape(x))
    x = tf.clip_by_value(x, 0.0, 1.0)

    # JPEG re-encoding at quality 30..95 on a third of the images (per image: no batched JPEG op).
    def maybe_jpeg(image):
        return tf.cond(
            tf.random.uniform([]) < 0.33 * strength, lambda: tf.image.random_jpeg_quality(image, 30, 95), lambda: image
        )

    x = tf.map_fn(maybe_jpeg, x)
    return tf.cast(tf.round(x[..., 0] * 255.0), tf.uint8)
