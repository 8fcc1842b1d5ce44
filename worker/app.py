"""The Celery application, configured from Django settings (``CELERY_*``).

Reliability settings live here rather than in the environment because the
service depends on them: results go to our own tables (no result backend), a
message is acknowledged only after its task finished (a killed worker's chunk
is redelivered), and each worker process reserves one message at a time.
"""

from __future__ import annotations

import os

from celery import Celery

# Before the app is created: Celery's Django fix-up then calls django.setup()
# in worker and beat processes before the task modules are imported.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

from django.conf import settings  # noqa: E402
from django.db.models.signals import post_migrate  # noqa: E402
from kombu import Queue  # noqa: E402

# Scoring messages go to one queue per priority (``screening.queue`` publishes). Workers consume the
# urgent one first: over Redis, kombu's "priority" queue order, so an urgent message is taken before
# any routine one; the embedded SQL broker alternates between the two, so urgent work waits for one
# routine chunk at most. Everything else (deliveries, beat's tasks) stays on Celery's default queue.
URGENT_QUEUE = "urgent"
ROUTINE_QUEUE = "celery"


def _transport_options(broker_url: str) -> dict:
    # Only Redis has a visibility timeout and socket timeouts; the SQLAlchemy
    # transport passes its options to create_engine, which refuses unknown ones.
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return {
            # BRPOP names the queues in the order the worker lists them (task_queues: urgent first).
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.CELERY_BROKER_VISIBILITY_TIMEOUT,
            "socket_timeout": settings.CELERY_BROKER_SOCKET_TIMEOUT,
            "socket_connect_timeout": settings.CELERY_BROKER_SOCKET_TIMEOUT,
        }
    return {}


def _poll_sql_broker_often(broker_url: str) -> None:
    """Poll the embedded SQL broker every 0.1 s instead of kombu's 1 s.

    With acks_late and prefetch 1 the worker can take its next message only
    after acknowledging the last one, and on a polling transport each of those
    waits a full polling interval: at 1 s a worker clears at most one chunk a
    second. The option cannot go through broker_transport_options, which this
    transport hands on to create_engine, so it is set on the transport class.
    """
    if broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy

        sqlalchemy.Transport.polling_interval = 0.1


def _reliability_settings() -> dict:
    """Celery settings the service depends on, read when Celery first needs its configuration.

    Lazily (``add_defaults``), not at import: the ``webapp`` project imports
    this module while Django's settings are still being loaded, so reading
    them here at import time would be a circular import.
    """
    _poll_sql_broker_often(settings.CELERY_BROKER_URL)
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        # A pool process killed after its main process reserved the message but before it claimed the
        # studies: without this the message is acknowledged as failed and the studies, held by the live
        # main process (``note_reserved``), wait for the stuck-QUEUED sweep (301 s in a chaos run).
        # Requeued instead, the replacement takes them at once. No loop: a claim counts an attempt, and a
        # redelivered chunk claims nothing another process holds.
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.CELERY_TASK_SOFT_TIME_LIMIT,
        "task_time_limit": settings.CELERY_TASK_TIME_LIMIT,
        "broker_transport_options": _transport_options(settings.CELERY_BROKER_URL),
        # Urgent scoring first (``screening.queue``); the routine queue is Celery's default one.
        "task_queues": (Queue(URGENT_QUEUE), Queue(ROUTINE_QUEUE)),
        "task_default_queue": ROUTINE_QUEUE,
        "broker_connection_retry_on_startup": True,
        # A web request that enqueues must not hang for long when the broker is
        # down: the studies stay RECEIVED and the sweep re-sends them.
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        "worker_hijack_root_logger": False,
        # Prefork, with queue locks that a killed pool process cannot keep (``worker.pool``).
        "worker_pool": "worker.pool:TaskPool",
        # A pool process warms its models before it reports itself up (``worker.signals``): wait for it.
        "worker_proc_alive_timeout": settings.CELERY_WORKER_PROC_ALIVE_TIMEOUT,
        "beat_schedule": {
            "requeue-stuck-studies": {
                "task": "screening.tasks.requeue_stuck_studies_task",
                "schedule": float(settings.SCREENING_SWEEP_INTERVAL_SECONDS),
            },
            "dicom-deliveries": {
                "task": "screening.tasks.queue_due_deliveries_task",
                "schedule": float(settings.SCREENING_SWEEP_INTERVAL_SECONDS),
            },
            "monitoring-check": {
                "task": "screening.tasks.monitoring_check_task",
                "schedule": float(settings.MONITORING_CHECK_SECONDS),
            },
            "housekeeping": {
                "task": "screening.tasks.housekeeping_task",
                "schedule": float(settings.SCREENING_HOUSEKEEPING_SECONDS),
            },
            "worker-heartbeat": {
                "task": "screening.tasks.record_heartbeat_task",
                "schedule": float(settings.SCREENING_HEARTBEAT_SECONDS),
            },
        },
    }


# The tasks and the worker's signal handlers (warm models in each pool process,
# heartbeats, the consumer watchdog): worker and beat import these at start,
# before worker_init; the web process, which loads this app to publish, never does.
app = Celery("screening", include=["worker.tasks", "worker.signals"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.add_defaults(_reliability_settings)


def prepare_sql_broker(broker_url: str | None = None) -> bool:
    """Create the embedded SQL broker's tables and default queue row now; True when there was one to prepare.

    kombu's SQLAlchemy transport creates both on first use, guarded by a lock
    that only holds within one process. A worker starting while the first
    upload publishes can then insert the same queue row twice, and the loser's
    publish fails with ``IntegrityError: UNIQUE constraint failed:
    kombu_queue.name`` (seen in a test run: the upload's studies waited for the
    sweep). ``migrate`` runs before the web server and the worker start, so it
    calls this (post_migrate, below) and the race cannot happen.
    """
    url = broker_url or settings.CELERY_BROKER_URL
    if not url.startswith("sqla+"):
        return False
    from kombu import Connection

    with Connection(url, transport_options=_transport_options(url)) as connection:
        for queue in app.conf.task_queues:
            Queue(queue.name, channel=connection.default_channel).declare()
    return True


def _prepare_sql_broker_after_migrate(sender, **kwargs) -> None:
    # ``migrate`` runs before the web server and the worker start, so the
    # schema exists before either can race to create it. post_migrate fires
    # once per installed app; once per migrate is enough.
    if sender.label == "screening":
        prepare_sql_broker()


post_migrate.connect(_prepare_sql_broker_after_migrate, dispatch_uid="worker.prepare_sql_broker")
