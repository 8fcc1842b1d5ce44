"""Deterministic image perturbations for stress tests and for a robust threshold.

Validation on ``train/`` is far too easy; the real risk is shift (other
scanners, exposure, compression, collimation). These perturbations act on the
model input (a squashed 224×224 uint8 image) and return one of the same kind,
so the scores of perturbed copies show how AUC and the operating point move.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ml.serving.preprocess import squash_to_input

Perturbation = Callable[[np.ndarray], np.ndarray]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def contrast(factor: float) -> Perturbation:
    return lambda img: _to_uint8((img.astype(np.float64) - img.mean()) * factor + img.mean())


def gamma(value: float) -> Perturbation:
    return lambda img: _to_uint8(255.0 * (img.astype(np.float64) / 255.0) ** value)


def blur(radius: float) -> Perturbation:
    return lambda img: np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)), np.uint8)


def noise(sigma: float, seed: int = 0) -> Perturbation:
    def apply(img: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed + int(img[::16, ::16].sum()))  # fixed per image
        return _to_uint8(img.astype(np.float64) + rng.normal(0.0, sigma, img.shape))

    return apply


def resolution(side: int) -> Perturbation:
    """Down to ``side`` pixels and squashed back up: a low-resolution upload."""
    return lambda img: squash_to_input(
        Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR), img.shape[0]
    )


def jpeg(quality: int) -> Perturbation:
    def apply(img: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"), np.uint8)

    return apply


def _cut_borders(img: np.ndarray, fraction: float, axes: tuple[int, ...]) -> np.ndarray:
    """Cut ``fraction`` of the side from both borders of each of ``axes`` and squash back to the input size."""
    kept = [slice(None), slice(None)]
    for axis in axes:
        margin = round(fraction * img.shape[axis])
        kept[axis] = slice(margin, img.shape[axis] - margin)
    return squash_to_input(Image.fromarray(img[tuple(kept)]), img.shape[0])


def crop(fraction: float) -> Perturbation:
    """Cut ``fraction`` of the side from every border and squash back: tighter collimation."""
    return lambda img: _cut_borders(img, fraction, (0, 1))


def crop_axis(fraction: float, axis: int) -> Perturbation:
    """Cut ``fraction`` from both borders of one axis only and squash back: anatomy stretched along it.

    Another hospital's film shape changes the proportions the squash leaves; a
    model that reads the distortion rather than the lungs moves here.
    """
    return lambda img: _cut_borders(img, fraction, (axis,))


# Mild shifts a deployed model must shrug off; the operating threshold is chosen to keep
# sensitivity on all of them (plus the clean images).
MILD = {
    "contrast_0.8": contrast(0.8),
    "contrast_1.25": contrast(1.25),
    "gamma_0.8": gamma(0.8),
    "gamma_1.25": gamma(1.25),
    "blur_1": blur(1.0),
    "noise_5": noise(5.0),
    "resolution_160": resolution(160),
    "jpeg_50": jpeg(50),
    "crop_5pct": crop(0.05),
}
# The stress test: the mild set plus stronger versions of each.
STRESS = {
    **MILD,
    "contrast_0.6": contrast(0.6),
    "contrast_1.5": contrast(1.5),
    "gamma_0.6": gamma(0.6),
    "gamma_1.6": gamma(1.6),
    "blur_2": blur(2.0),
    "noise_12": noise(12.0),
    "resolution_112": resolution(112),
    "jpeg_20": jpeg(20),
    "crop_10pct": crop(0.10),
    "stretch_x_10pct": crop_axis(0.10, axis=1),
    "stretch_y_10pct": crop_axis(0.10, axis=0),
}


def apply_all(images: np.ndarray, perturbation: Perturbation) -> np.ndarray:
    return np.stack([perturbation(img) for img in images])
