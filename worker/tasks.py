"""Celery tasks: thin wrappers that take ids and leave the work to ``worker.scoring`` and ``screening``.

Only the worker imports this module (``worker.app`` includes it). The web
process publishes by name (``screening.queue``), so each task keeps the name
it was first registered under, ``screening.tasks.*``: messages already in a
broker and beat's schedule find it after the move.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from screening.dicom import outbox
from screening.liveness import process_name
from screening.models import WorkerHeartbeat
from screening.queue import requeue_stuck_studies
from worker.loaded_models import get_gate, get_population_check, get_screener
from worker.scoring import score_chunk

log = logging.getLogger(__name__)


# Database errors are retried for longer than a realistic outage (2 + 4 + 8 + 16 + 30 × 8 s,
# about 4.5 minutes, without jitter: with it, five retries once fitted into 9 s of a 20-s
# outage). The sweep re-sends whatever outlives even that.
RETRY_THROUGH_DATABASE_OUTAGES = dict(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=False,
    max_retries=12,
)


@shared_task(name="screening.tasks.score_studies_task", bind=True, **RETRY_THROUGH_DATABASE_OUTAGES)
def score_studies_task(self, study_ids: list[int], reclaim_from: list[str] | None = None) -> None:
    """Score a chunk of studies in one forward pass. Safe to run twice.

    The database going away mid-chunk leaves studies this process claimed and
    could not hand back. The retry (same backoff as ``autoretry_for``) may run
    in the other pool process, which would not take them (they are held by a
    process that is alive) and leave them to the stuck-RUNNING sweep, minutes
    later; so the retry names every process that ran an attempt of this chunk.
    """
    claimant = process_name()
    try:
        summary = score_chunk(
            study_ids,
            get_screener(),
            get_gate(),
            get_population_check(),
            claimant=claimant,
            reclaim_from=reclaim_from or (),
        )
    except (OperationalError, InterfaceError) as exc:
        countdown = get_exponential_backoff_interval(
            self.retry_backoff, self.request.retries, self.retry_backoff_max, self.retry_jitter
        )
        earlier = sorted({*(reclaim_from or ()), claimant})
        raise self.retry(exc=exc, countdown=countdown, kwargs={"reclaim_from": earlier}) from exc
    log.info(
        "chunk of %d: claimed %d, done %d, failed %d, rejected %d",
        len(study_ids),
        len(summary.claimed),
        summary.done,
        summary.failed,
        summary.rejected,
    )


@shared_task(name="screening.tasks.requeue_stuck_studies_task", ignore_result=True, acks_late=False)
def requeue_stuck_studies_task() -> None:
    requeue_stuck_studies()


@shared_task(name="screening.tasks.record_heartbeat_task", bind=True, ignore_result=True, acks_late=False, expires=60)
def record_heartbeat_task(self) -> None:
    """Note that this worker is alive and reachable through beat and the broker (``WorkerHeartbeat``)."""
    WorkerHeartbeat.objects.update_or_create(
        hostname=(self.request.hostname or "unknown")[:255], defaults={"seen_at": timezone.now()}
    )


@shared_task(name="screening.tasks.send_delivery_task", **RETRY_THROUGH_DATABASE_OUTAGES)
def send_delivery_task(delivery_id: int) -> None:
    """Send one result object to one DICOM destination (``screening.dicom.outbox``). Safe to run twice."""
    outbox.send(delivery_id)


@shared_task(name="screening.tasks.queue_due_deliveries_task", ignore_result=True, acks_late=False)
def queue_due_deliveries_task() -> None:
    outbox.queue_due()


@shared_task(name="screening.tasks.housekeeping_task", ignore_result=True, acks_late=False)
def housekeeping_task() -> None:
    """Remove orphaned stored files; purge originals past retention, when set (``screening.intake.housekeeping``)."""
    from screening.intake import housekeeping

    housekeeping.run()


@shared_task(name="screening.tasks.monitoring_check_task", ignore_result=True, acks_late=False)
def monitoring_check_task() -> None:
    """Recompute the figures watched in use; audit any that left or re-entered its band (``governance.monitoring``)."""
    from screening.governance import monitoring

    monitoring.check(series=False)
