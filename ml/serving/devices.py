"""Which device the model runs on, set up so that several worker processes can share one GPU."""

from __future__ import annotations

import os


def prepare_devices() -> str:
    """Turn on memory growth for every GPU (before TensorFlow touches one) and say where the model will run.

    By default TensorFlow maps nearly all of a GPU's memory into the first
    process that uses it, so a second worker process on the same GPU fails
    to start; with growth each takes what its model needs (a few hundred MB).
    ``TF_FORCE_GPU_ALLOW_GROWTH=true``, which the GPU worker's compose service
    sets, does the same from the environment.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TensorFlow already initialised this GPU in this process
            pass
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return f"GPU ({', '.join(names)})"
