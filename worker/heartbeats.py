"""Each worker process's heartbeat: written from a thread every few seconds, and saying when its models are warm.

The sweep trusts a claim while its holder's heartbeat is recent, and
readiness counts the warm ones (``screening.liveness`` reads them). A pool
process starts beating before it warms up, so a slow warm-up is never taken
for death.
"""

from __future__ import annotations

import logging
import socket
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from screening import counters
from screening.liveness import gone_here, process_name
from screening.models import WorkerHeartbeat

log = logging.getLogger(__name__)

# Set in a pool process once its models are warm (``worker.signals``); its heartbeats then say so.
_warm = threading.Event()


def beat_once(name: str | None = None) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=name or process_name(), defaults={"seen_at": timezone.now(), "warm": _warm.is_set()}
    )


def mark_warm() -> None:
    """This process can score now: say so in its heartbeat at once, not only at the next beat."""
    _warm.set()
    beat_once()


def cool_dead_local_processes() -> int:
    """Mark warm heartbeats of this host's processes that no longer exist as not warm; how many."""
    host = socket.gethostname()
    dead = gone_here(
        WorkerHeartbeat.objects.filter(warm=True, hostname__startswith=f"{host}:").values_list("hostname", flat=True)
    )
    if dead:
        log.warning("pool processes gone: %s", ", ".join(dead))
        WorkerHeartbeat.objects.filter(hostname__in=dead).update(warm=False)
        counters.add(counters.POOL_PROCESSES_LOST, len(dead))
    return len(dead)


def start_heartbeat_thread(stop: threading.Event | None = None, watch_pool: bool = False) -> threading.Thread:
    """Write this process's heartbeat now and every ``SCREENING_PROCESS_HEARTBEAT_SECONDS`` until ``stop``.

    ``watch_pool`` (the worker's main process): also mark this host's pool
    processes that no longer exist as not warm, so readiness turns red within
    one beat of a pool process being killed rather than when its heartbeat ages.
    """
    stop = stop or threading.Event()
    name = process_name()

    def run() -> None:
        while True:
            try:
                beat_once(name)
                if watch_pool:
                    cool_dead_local_processes()
            except DatabaseError:  # the database is away; the sweep cannot run either, so nothing is lost
                log.warning("could not record the heartbeat of %s", name)
            finally:
                close_old_connections()
            if stop.wait(settings.SCREENING_PROCESS_HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=run, name="screening-heartbeat", daemon=True)
    thread.start()
    return thread
