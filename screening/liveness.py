"""Which worker process holds a claim, whether it is still alive, and whether the broker was restarted.

Before, a killed worker's chunk waited for the RUNNING timeout (150 s) and a
Redis restart's lost messages for the QUEUED one (5 min). Now each claim
names its process, each process writes a heartbeat every few seconds from a
thread, and the sweep re-queues a claim as soon as its process has been
silent for ``SCREENING_DEAD_WORKER_SECONDS``; and the sweep notices a new
Redis instance (its ``run_id``) and re-publishes every QUEUED study at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from screening import counters
from screening.models import ServiceState, WorkerHeartbeat

log = logging.getLogger(__name__)

BROKER_IDENTITY_KEY = "broker_run_id"


def process_name() -> str:
    """``host:pid``: what a claim records, and what this process's heartbeat is filed under."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


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
    dead = []
    for hostname in WorkerHeartbeat.objects.filter(warm=True, hostname__startswith=f"{host}:").values_list(
        "hostname", flat=True
    ):
        try:
            os.kill(int(hostname.rsplit(":", 1)[1]), 0)
        except ProcessLookupError:
            dead.append(hostname)
        except (ValueError, PermissionError):
            continue  # not a pid, or a process of another user: alive as far as we can tell
    if dead:
        log.warning("pool processes gone: %s", ", ".join(dead))
        WorkerHeartbeat.objects.filter(hostname__in=dead).update(warm=False)
        counters.add(counters.POOL_PROCESSES_LOST, len(dead))
    return len(dead)


def warm_processes(now=None, host: str | None = None):
    """Heartbeats of pool processes that are warm and alive (on ``host``, when given)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS)
    rows = WorkerHeartbeat.objects.filter(warm=True, seen_at__gte=cutoff)
    return rows.filter(hostname__startswith=f"{host}:") if host else rows


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


def live_processes(now=None):
    """Names whose heartbeat is recent enough to trust their claims."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS)
    return WorkerHeartbeat.objects.filter(seen_at__gte=cutoff).values("hostname")


def broker_was_replaced() -> bool:
    """True once after the broker came back as a new, empty instance (Redis without persistence).

    Redis gives each server run a random ``run_id``; a change means its queues
    started empty. Brokers without one (the embedded SQL broker keeps its
    messages in a file) never count as replaced.
    """
    current = _broker_run_id()
    if current is None:
        return False
    state, created = ServiceState.objects.get_or_create(key=BROKER_IDENTITY_KEY, defaults={"value": current})
    if created or state.value == current:
        return False
    state.value = current
    state.save(update_fields=["value", "updated_at"])
    return True


def _broker_run_id() -> str | None:
    from celery import current_app

    if not str(current_app.conf.broker_url).startswith(("redis://", "rediss://")):
        return None
    try:
        with current_app.connection_for_write() as connection:
            return str(connection.default_channel.client.info("server")["run_id"])
    except Exception:  # noqa: BLE001 - unreachable broker: nothing to compare yet
        log.warning("could not read the broker's run_id")
        return None
