"""One model per worker process, loaded after the fork.

TensorFlow must not be initialised in the parent of a prefork pool (its
thread pools do not survive ``fork``), so the model is loaded in each child
by ``worker_process_init``, or on first use by pools that do not fork.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from celery.signals import worker_process_init
from django.conf import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_screener = None


def model_dir() -> Path:
    if settings.SCREENING_MODEL_DIR:
        return Path(settings.SCREENING_MODEL_DIR)
    from ml.inference import current_model_dir

    return current_model_dir()


def get_screener():
    global _screener
    if _screener is None:
        with _lock:
            if _screener is None:
                from ml.inference import Screener

                directory = model_dir()
                _screener = Screener.load(directory)
                log.info("loaded model %s from %s", _screener.version, directory)
    return _screener


@worker_process_init.connect
def load_screener_in_child(**kwargs) -> None:
    get_screener()
