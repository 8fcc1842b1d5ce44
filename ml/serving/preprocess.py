"""The one preprocessing path shared by training, evaluation and serving.

The training copies in ``chest_xray/`` were resized to 224x224 *without*
keeping the aspect ratio, so every input we score must be squashed the same
way: cropping or padding only at serving time would show the model shapes it
never saw. Intensity scaling to [-1, 1] and the grey-to-RGB repeat live inside
the saved model, so this function hands the model plain 8-bit grey pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INPUT_SIZE = 224  # pixels, square: the resolution of the training copies

# Bilinear with Pillow's antialiasing (it widens the kernel when shrinking);
# close to what produced the 224x224 training copies from the originals.
RESAMPLE = Image.Resampling.BILINEAR


def squash_to_input(gray: np.ndarray | Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """Return a ``(size, size)`` uint8 array: ``gray`` resized, aspect ratio ignored.

    ``gray`` must already be a single-channel 8-bit image (decoding, windowing
    and MONOCHROME1 inversion happen before this, in ``ml.serving.decode``).
    """
    image = gray if isinstance(gray, Image.Image) else Image.fromarray(_as_uint8_2d(gray))
    if image.mode != "L":
        raise ValueError(f"expected a single-channel 8-bit image (mode L), got mode {image.mode}")
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


def _as_uint8_2d(array: np.ndarray) -> np.ndarray:
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    return array
