"""Backbone outputs computed once and kept on disk (``ml/cache/``, git-ignored).

Frozen layers give the same output for the same input every time, so the
training tools that build on a frozen backbone (``train_frozen``,
``train_partial``, ``gate_fit``) compute it once per image, clean or with one
seeded augmentation, and reuse it across runs and candidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ml.training.runs import REPO, log

CACHE = REPO / "ml" / "cache"


def cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``np.load(path)`` when it exists, else ``compute()`` saved there."""
    if path.exists():
        return np.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, value)
    return value


def activations(
    model,
    images: np.ndarray,
    augment: dict | None,
    seed: int,
    batch: int = 32,
    dtype=np.float16,
    stream=None,
) -> np.ndarray:
    """``model``'s output for uint8 ``images``, in batches; ``augment`` holds ``augment_batch`` keyword arguments
    (``{}`` for its defaults), or None for the clean images."""
    import tensorflow as tf

    from ml.training.augment import augment_batch

    @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.uint8)])
    def forward(x):
        if augment is not None:
            x = augment_batch(x, **augment)
        return model(x, training=False)

    tf.random.set_seed(seed)
    out = np.empty((len(images), *model.output.shape[1:]), dtype)
    started = time.time()
    for start in range(0, len(images), batch):
        out[start : start + batch] = np.asarray(forward(images[start : start + batch]), dtype)
        if stream is not None and (start // batch + 1) % 40 == 0:
            log(f"  activations {start + batch}/{len(images)} ({time.time() - started:.0f}s)", stream)
    return out
