"""One model per worker process, loaded after the fork.

TensorFlow must not be initialised in the parent of a prefork pool (its
thread pools do not survive ``fork``), so the model is loaded in each child
by ``worker_process_init``, or on first use by pools that do not fork.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init

from screening.serving import model_dir

log = logging.getLogger(__name__)

_lock = threading.Lock()
_screener = None
_gate = None


def get_screener():
    global _screener
    if _screener is None:
        with _lock:
            if _screener is None:
                from ml.heatmap import ExplainingScreener
                from ml.inference import Screener

                directory = model_dir()
                _screener = ExplainingScreener(Screener.load(directory))
                log.info("loaded model %s from %s", _screener.version, directory)
    return _screener


def get_gate():
    """The out-of-distribution gate that runs before the model (``ml/models/gate-v1``)."""
    global _gate
    if _gate is None:
        with _lock:
            if _gate is None:
                from ml.gate import ChestXrayGate

                _gate = ChestXrayGate.load()
                log.info("loaded gate %s", _gate.version)
    return _gate


def warm_up() -> None:
    """Run the model and the gate once at a single study and at a full chunk.

    The first call at a new batch size traces the graph and builds oneDNN's
    kernels for that shape (about a second on 2 cores); paying it when the
    worker starts keeps it out of the first real study's latency.
    """
    import numpy as np
    from django.conf import settings

    screener, gate = get_screener(), get_gate()
    for batch in sorted({1, settings.SCREENING_CHUNK_SIZE}):
        images = np.zeros((batch, screener.input_size, screener.input_size), np.uint8)
        screener.explain(images)
        gate.check(images)


@worker_process_init.connect
def load_screener_in_child(**kwargs) -> None:
    warm_up()
