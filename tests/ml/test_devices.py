"""The worker says where its model runs, and lets several processes share a GPU."""

from ml.serving.devices import prepare_devices


def test_the_device_line_names_what_tensorflow_sees():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    line = prepare_devices()
    if gpus:
        assert line.startswith("GPU (") and all(tf.config.experimental.get_memory_growth(g) for g in gpus)
    else:
        assert line.startswith("CPU (") and "cores" in line
