"""Which device the model runs on, set up so that several worker processes can share one GPU."""

from __future__ import annotations

import contextlib
import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, as on Linux), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def prepare_devices(cpu_threads: int | None = None) -> str:
    """Turn on memory growth for every GPU (before TensorFlow touches one) and say where the model will run.

    ``cpu_threads`` caps the threads of each CPU kernel (TensorFlow's
    intra-op pool, by default one per core). It must be set before
    TensorFlow runs its first operation in this process; later it is left as
    it is, and the answer says so.

    By default TensorFlow maps nearly all of a GPU's memory into the first
    process that uses it, so a second worker process on the same GPU fails
    to start; with growth each takes what its model needs (a few hundred MB).
    ``TF_FORCE_GPU_ALLOW_GROWTH=true``, which the GPU worker's compose service
    sets, does the same from the environment.
    """
    import tensorflow as tf

    threads = ""
    if cpu_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            threads = f", {cpu_threads} thread{'s' if cpu_threads > 1 else ''} per kernel"
        except RuntimeError:  # TensorFlow already started in this process
            current = tf.config.threading.get_intra_op_parallelism_threads()
            threads = f", threads per kernel already set ({current or 'one per core'})"
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # TensorFlow already initialised this GPU in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus:
        return f"CPU ({usable_cores()} cores{threads})"
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return f"GPU ({', '.join(names)}){threads}"
