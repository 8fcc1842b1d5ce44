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


@worker_process_init.connect
def load_screener_in_child(**kwargs) -> None:
    get_screener()
    get_gate()
