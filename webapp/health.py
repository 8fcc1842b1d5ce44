"""Probes for load balancers, docker-compose and operators. No login needed, no secrets in the answers.

``/healthz`` is liveness: the process answers (restart it if not). It checks
nothing else, so a database outage does not get healthy web processes
restarted. ``/readyz`` is readiness: the database answers, the broker
accepts a connection, the media storage is writable, a worker ran the
beat's heartbeat task recently (beat, broker and worker all moving), and at
least one pool process is alive with its models warm (a worker whose pool
processes all died, or are still warming up, cannot score: the worker's main
process alone keeps beating). Any failure makes it a 503.

Which check failed, and why, tells an outsider what the service runs on and
where it is weak, so the checks are named only to a logged-in staff member or
to a caller sending ``Authorization: Bearer <HEALTH_DETAILS_TOKEN>``; everyone
else gets the bare status (a wrong token too: a probe is never refused), and a
failure is logged with its checks for the operators.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.utils import DatabaseError
from django.http import JsonResponse
from django.utils import timezone

log = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2
MISSED_HEARTBEATS = 3


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {
        "database": _database(),
        "broker": _broker(),
        "storage": _storage(),
    }
    checks["worker"] = _worker() if checks["database"] == "ok" else "unknown (database unavailable)"
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        log.warning("not ready: %s", ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok"))
    answer = {"status": "ready" if ready else "unavailable"}
    if _may_see_details(request):
        answer["checks"] = checks
    return JsonResponse(answer, status=200 if ready else 503)


def _may_see_details(request) -> bool:
    """The holder of ``HEALTH_DETAILS_TOKEN`` (compared in constant time), or a logged-in staff member.

    The token is checked first: it needs no database, and the session does.
    """
    token = settings.HEALTH_DETAILS_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    try:
        return request.user.is_authenticated and request.user.is_staff
    except DatabaseError:  # the session cannot be read while the database is down
        return False


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return "unavailable"
    return "ok"


def _broker() -> str:
    from celery import current_app

    try:
        with current_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - kombu raises transport-specific errors; any of them means "not reachable"
        return "unavailable"
    return "ok"


def _storage() -> str:
    probe = Path(settings.MEDIA_ROOT) / f".readyz-{uuid.uuid4().hex}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError:
        return "not writable"
    return "ok"


def _worker() -> str:
    from screening.models import WorkerHeartbeat

    latest = WorkerHeartbeat.objects.order_by("-seen_at").values_list("seen_at", flat=True).first()
    if latest is None:
        return "no worker heartbeat yet"
    age = timezone.now() - latest
    if age > timedelta(seconds=MISSED_HEARTBEATS * settings.SCREENING_HEARTBEAT_SECONDS):
        return f"no worker heartbeat for {age.total_seconds():.0f} s"
    from screening.liveness import warm_processes

    if not warm_processes().exists():
        return "no warm pool process (every one is dead or still warming up)"
    return "ok"
