"""The worker says where its model runs, and lets several processes share a GPU."""

from ml.serving.devices import prepare_devices


def test_the_device_line_names_what_tensorflow_sees():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    line = prepare_devices()
    if gpus:
        assert line.startswith("GPU (")
        assert all(tf.config.experimental.get_memory_growth(g) for g in gpus)
    else:
        assert line.startswith("CPU (")
        assert "cores" in line


def test_usable_cores_works_where_the_os_has_no_cpu_affinity(monkeypatch):
    import os

    from ml.serving import devices

    assert devices.usable_cores() >= 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS has none
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert devices.usable_cores() == 6
