"""Which worker processes are alive and warm, and whether the broker came back empty.

A claim on a study names the process that holds it (``process_name``), and
each process writes a heartbeat every few seconds (``worker.heartbeats``): a
claim is good while its holder's heartbeat is recent. The heartbeat is the
lease, so a dead holder's studies go back to the queue within
``SCREENING_DEAD_WORKER_SECONDS`` rather than after a task's time limit. The
web process reads these (readiness, the sweep's decisions); only a worker
writes them.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from screening.models import ServiceState, WorkerHeartbeat

log = logging.getLogger(__name__)

BROKER_IDENTITY_KEY = "broker_run_id"


def process_name() -> str:
    """``host:pid``: what a claim records, and what this process's heartbeat is filed under."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def gone_here(names) -> list[str]:
    """Those of ``names`` (``host:pid``) that are processes of this host and no longer exist.

    Certain, unlike a silent heartbeat: the kernel says the pid is gone. A pid
    reused by a new process counts as alive, so a claim is never taken from a
    live holder; it then waits for the lease, as a claim of another host does.
    """
    prefix = f"{socket.gethostname()}:"
    gone = []
    for name in names:
        if not name.startswith(prefix):
            continue
        try:
            os.kill(int(name.rsplit(":", 1)[1]), 0)
        except ProcessLookupError:
            gone.append(name)
        except (ValueError, PermissionError):
            continue  # not a pid, or a process of another user: alive as far as we can tell
    return gone


def warm_processes(now=None, host: str | None = None):
    """Heartbeats of pool processes that are warm and alive (on ``host``, when given)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS)
    rows = WorkerHeartbeat.objects.filter(warm=True, seen_at__gte=cutoff)
    return rows.filter(hostname__startswith=f"{host}:") if host else rows


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
