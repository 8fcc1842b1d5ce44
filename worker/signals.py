"""Worker signals: the pool's size, noted before it forks; in each pool process, its heartbeat and a warm model."""

from __future__ import annotations

import logging

import numpy as np
from celery.signals import worker_init, worker_process_init
from django.conf import settings

from ml.serving.devices import prepare_devices
from screening.serving import cpu_threads, get_gate, get_population_check, get_screener, set_pool_processes

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Load the model, the gate and the population check; run the first two at one study and at a full chunk.

    The first call at a new batch size traces the graph and builds oneDNN's
    kernels for that shape (about a second on 2 cores); paying it when the
    worker starts keeps it out of the first real study's latency.
    """
    device = prepare_devices(cpu_threads=cpu_threads())
    screener, gate = get_screener(), get_gate()
    log.info("model %s runs on %s, chunks of %d", screener.version, device, settings.SCREENING_CHUNK_SIZE)
    get_population_check()
    for batch in sorted({1, settings.SCREENING_CHUNK_SIZE}):
        images = np.zeros((batch, screener.input_size, screener.input_size), np.uint8)
        screener.explain(images)
        gate.check(images)


@worker_init.connect
def remember_pool_size(sender, **kwargs) -> None:
    """In the worker's main process, before the pool forks: its children share the cores out by this count."""
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        set_pool_processes(concurrency)


@worker_process_init.connect
def load_screener_in_child(**kwargs) -> None:
    # Heartbeat first: the sweep must not take this process for dead while it warms up.
    # (Imported here: this module loads with the Celery app, before Django's models are ready.)
    from screening.liveness import start_heartbeat_thread

    start_heartbeat_thread()
    warm_up()
