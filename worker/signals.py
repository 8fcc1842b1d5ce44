"""Worker signals: the pool's size, noted before it forks; in each pool process, its heartbeat and a warm model."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from celery.signals import task_received, worker_init, worker_process_init, worker_ready
from django.conf import settings
from django.db import DatabaseError

from ml.serving.devices import prepare_devices
from webapp.database import use_statement_timeout
from worker.loaded_models import cpu_threads, get_gate, get_population_check, get_screener, set_pool_processes

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Load the model, the gate and the population check; run the first two at one study and at a full chunk.

    The first call at a new batch size traces the graph and builds oneDNN's
    kernels for that shape (about a second on 2 cores); paying it when the
    worker starts keeps it out of the first real study's latency.
    """
    started = time.monotonic()
    device = prepare_devices(cpu_threads=cpu_threads())
    screener, gate = get_screener(), get_gate()
    log.info("model %s runs on %s, chunks of %d", screener.version, device, settings.SCREENING_CHUNK_SIZE)
    get_population_check()
    for batch in sorted({1, settings.SCREENING_CHUNK_SIZE}):
        images = np.zeros((batch, screener.input_size, screener.input_size), np.uint8)
        screener.explain(images)
        gate.check(images)
    # Celery kills a pool process that is not up within worker_proc_alive_timeout: this must stay well below it.
    log.info("pool process %d warm in %.1f s", os.getpid(), time.monotonic() - started)


@worker_init.connect
def remember_pool_size(sender, **kwargs) -> None:
    """In the worker's main process, before the pool forks: its children share the cores out by this count."""
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        set_pool_processes(concurrency)


@worker_init.connect
def use_the_workers_statement_timeout(**kwargs) -> None:
    """Before the pool forks and the heartbeat threads start: every connection of this worker gets its own limit."""
    use_statement_timeout(settings.DATABASE_WORKER_STATEMENT_TIMEOUT)


@worker_ready.connect
def beat_from_the_main_process(**kwargs) -> None:
    """The main process reserves messages for its pool (``note_reserved``): the sweep must see it alive too."""
    from worker.heartbeats import start_heartbeat_thread

    start_heartbeat_thread(watch_pool=True)


@worker_ready.connect
def watch_the_consumer(sender=None, **kwargs) -> None:
    """Reconnect a consumer that stopped taking messages without an error (``worker.watchdog``)."""
    import socket

    from screening.liveness import warm_processes
    from worker import watchdog

    if sender is not None and getattr(sender, "hub", None) is not None:  # the event loop (prefork pool)
        host = socket.gethostname()
        watchdog.start(
            sender,
            interval=settings.SCREENING_PROCESS_HEARTBEAT_SECONDS,
            pool_ready=lambda: warm_processes(host=host).exists(),
        )


@task_received.connect
def note_the_reserved_chunk(request=None, **kwargs) -> None:
    """In the main process, as a scoring message is reserved for the pool: name this process on its studies."""
    from screening.liveness import process_name
    from screening.queue import SCORE_STUDIES_TASK, note_reserved

    if request is not None and request.name == SCORE_STUDIES_TASK and request.args:
        note_reserved(request.args[0], process_name())


@worker_process_init.connect
def load_screener_in_child(**kwargs) -> None:
    # Heartbeat first: the sweep must not take this process for dead while it warms up.
    # (Imported here: this module loads with the Celery app, before Django's models are ready.)
    from screening import counters
    from worker.heartbeats import mark_warm, start_heartbeat_thread

    start_heartbeat_thread()
    try:
        counters.add(counters.POOL_PROCESS_STARTS)
    except DatabaseError:  # a count is not worth a pool process that cannot start
        log.warning("could not count this pool process's start: the database is away")
    warm_up()
    mark_warm()
