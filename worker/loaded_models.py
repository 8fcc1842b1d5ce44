"""The one loaded copy per worker process of the model, the gate and the population check.

They load on first use: TensorFlow must not be initialised in the parent of
a prefork pool (its thread pools do not survive ``fork``), so the worker
calls these in each pool process after the fork (``worker.signals``), never
at import time.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from ml.serving.devices import usable_cores
from screening.served_model import model_dir

log = logging.getLogger(__name__)

_lock = threading.RLock()  # re-entrant: loading the population check loads the gate
_loaded: dict[str, object] = {}
# Processes in this worker's pool, set in the pool's parent before it forks (``worker.signals``).
_pool_processes = 1


def set_pool_processes(count: int) -> None:
    global _pool_processes
    _pool_processes = max(1, int(count))


def cpu_threads() -> int:
    """Threads this process gives to decoding a chunk and to the model's CPU kernels.

    ``SCREENING_THREADS_PER_PROCESS`` when set; else this machine's cores
    (those the process may run on) shared out among the pool's processes.
    Oversubscribed cores cost more than they give: TensorFlow's and the
    decoders' threads then spin and wait on one another.
    """
    if settings.SCREENING_THREADS_PER_PROCESS:
        return settings.SCREENING_THREADS_PER_PROCESS
    return max(1, usable_cores() // _pool_processes)


def _once(name: str, load):
    """``load()`` the first time ``name`` is asked for in this process, under a lock; the same object after."""
    if name not in _loaded:
        with _lock:
            if name not in _loaded:
                _loaded[name] = load()
                log.info("loaded %s %s", name, getattr(_loaded[name], "version", ""))
    return _loaded[name]


def get_screener():
    """The served model, explaining each score with a heatmap (``ml.serving.heatmap.ExplainingScreener``)."""

    def load():
        from ml.serving.heatmap import ExplainingScreener
        from ml.serving.inference import Screener

        return ExplainingScreener(Screener.load(model_dir()))

    return _once("model", load)


def get_gate():
    """The out-of-distribution gate whose verdict decides whether the model's answer is kept (``ml/models/gate-v1``)."""

    def load():
        from ml.serving.gate import ChestXrayGate

        return ChestXrayGate.load()

    return _once("gate", load)


def get_population_check():
    """The image-based population check (``ml/models/population-v1``), which reads the gate's features."""

    def load():
        from ml.serving.population_check import PopulationCheck

        check, gate = PopulationCheck.load(), get_gate()
        if check.gate_version != gate.version:
            raise RuntimeError(
                f"population check {check.version} was fitted on {check.gate_version} features, "
                f"but the served gate is {gate.version}"
            )
        return check

    return _once("population check", load)
