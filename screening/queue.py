"""Handing studies to the workers, and taking back the ones a worker lost.

``enqueue_studies_on_commit`` is the only function that sends scoring tasks:
it waits for the transaction that created the studies to commit, so a worker
never looks for a row that does not exist yet. The database stays the source
of truth: ``requeue_stuck_studies`` (run periodically by the worker's beat)
re-sends studies whose message was lost, so neither a broker outage nor a
killed worker loses a study.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from screening import liveness
from screening.models import Study, WorkerHeartbeat
from worker.app import ROUTINE_QUEUE, URGENT_QUEUE  # the Celery app's queues: urgent consumed first

log = logging.getLogger(__name__)

# Sent by name: the task module imports this one (scoring hands interrupted
# studies back through ``release_unfinished``), so importing the task here
# would be a cycle. ``tests/test_worker_app.py`` checks the name is registered.
SCORE_STUDIES_TASK = "screening.tasks.score_studies_task"
SEND_DELIVERY_TASK = "screening.tasks.send_delivery_task"


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def mark_queued(studies, now=None, *, holder: str = "", **also) -> int:
    """Put ``studies`` (a queryset) in the queue: QUEUED from now, held by ``holder`` (by default no process).

    Every way into QUEUED goes through here. A holder left from an earlier
    claim would make the sweep take the study for one whose message a dead
    process had reserved (``note_reserved``), and send it again.
    """
    return studies.update(status=Study.Status.QUEUED, queued_at=now or timezone.now(), claimed_by=holder, **also)


def enqueue_studies_on_commit(study_ids: Sequence[int]) -> None:
    """Send scoring tasks for these studies, in chunks, once the current transaction commits."""
    ids = [int(i) for i in study_ids]
    if ids:
        transaction.on_commit(lambda: _publish_rollback_unsafe(ids))


def _publish_rollback_unsafe(study_ids: list[int]) -> None:
    """Publish now, whatever the transaction state: only ``enqueue_studies_on_commit`` may call this.

    The studies are marked QUEUED in one UPDATE *before* any message goes
    out, so a fast worker never finds one still RECEIVED (an UPDATE a chunk
    cost 16 round trips and commits for 500 studies), and held by this
    process until every message is out. A process killed in between (a web
    worker after its commit) leaves them held by a process that writes no
    heartbeat, which the sweep treats like a dead worker's reservation: it
    re-sends them after ``SCREENING_DEAD_WORKER_SECONDS``, not after the
    stuck-QUEUED timeout. A message sent twice is harmless (the claim is
    conditional). The first message the broker refuses ends the publishing:
    that chunk and the ones after it go back to RECEIVED for the sweep to
    re-send. Trying each chunk in turn made an upload during a broker outage
    wait out the retries once per chunk.
    """
    chunks = _chunks_by_priority(study_ids)
    publisher = liveness.process_name()
    waiting = Q(status=Study.Status.RECEIVED) | Q(status=Study.Status.QUEUED, claimed_by="")
    mark_queued(Study.objects.filter(waiting, pk__in=study_ids), holder=publisher)
    unsent: list[int] = []
    for sent, (queue, chunk) in enumerate(chunks):
        try:
            send_score_task(chunk, queue)
        except Exception:  # broker unreachable: the sweep re-sends; never fail the upload
            unsent = [pk for _, rest in chunks[sent:] for pk in rest]
            log.exception("could not publish scoring tasks for %d studies; the sweep will retry", len(unsent))
            Study.objects.filter(pk__in=unsent, status=Study.Status.QUEUED).update(
                status=Study.Status.RECEIVED, claimed_by=""
            )
            break
    # Sent: no longer this process's to answer for (a worker's main process may already have noted itself).
    Study.objects.filter(pk__in=study_ids, status=Study.Status.QUEUED, claimed_by=publisher).exclude(
        pk__in=unsent
    ).update(claimed_by="")


def _chunks_by_priority(study_ids: list[int]) -> list[tuple[str, list[int]]]:
    """(queue, chunk) pairs: urgent studies first, each priority in chunks of ``SCREENING_CHUNK_SIZE``."""
    urgent = set(Study.objects.filter(pk__in=study_ids, priority=Study.Priority.URGENT).values_list("pk", flat=True))
    ordered = [pk for pk in study_ids if pk in urgent], [pk for pk in study_ids if pk not in urgent]
    return [
        (queue, chunk)
        for queue, ids in zip((URGENT_QUEUE, ROUTINE_QUEUE), ordered, strict=True)
        for chunk in chunked(ids, settings.SCREENING_CHUNK_SIZE)
    ]


def enqueue_deliveries_on_commit(delivery_ids: Sequence[int]) -> None:
    """Send a task per DICOM delivery once the transaction that wrote the rows commits.

    A publish that fails is only logged: the rows stay pending and the
    sweep (``outbox.queue_due``) queues them again.
    """
    ids = [int(i) for i in delivery_ids]

    def publish() -> None:
        for delivery_id in ids:
            try:
                send_delivery_task(delivery_id)
            except Exception:
                log.exception("could not publish DICOM delivery %s; the sweep will retry", delivery_id)
                return

    if ids:
        transaction.on_commit(publish)


def send_delivery_task(delivery_id: int) -> None:
    """The one call that puts a DICOM delivery message on the broker."""
    current_app.send_task(SEND_DELIVERY_TASK, args=[delivery_id])


def send_score_task(chunk: list[int], queue: str = ROUTINE_QUEUE) -> None:
    """The one call that puts a scoring message on the broker (through the process's Celery app, ``worker.app``)."""
    current_app.send_task(SCORE_STUDIES_TASK, args=[chunk], queue=queue)


def note_reserved(study_ids: Sequence[int], holder: str) -> None:
    """Record on waiting studies which worker process has reserved their message (``worker.signals``).

    A worker's main process takes a message from the broker before one of its
    pool processes starts the task and claims the studies. Killed in between,
    the message stays unacknowledged in Redis for the visibility timeout (4
    minutes) and the studies QUEUED; with the holder noted, the sweep re-sends
    them as soon as that process is silent, as it does for claims. Best
    effort: without the note the longer timeouts still apply.
    """
    try:
        Study.objects.filter(pk__in=list(study_ids), status=Study.Status.QUEUED).update(claimed_by=holder)
    except DatabaseError:
        log.warning("could not note that %s holds %d queued studies", holder, len(study_ids))


def requeue_stuck_studies(now=None, *, broker_replaced: bool | None = None) -> dict[str, int]:
    """Re-send studies whose message was lost; fail those that keep getting lost.

    - RECEIVED for a minute: the publish after commit failed.
    - QUEUED for longer than a broker redelivery takes: the message is gone;
      every QUEUED study at once when the broker came back empty (a new Redis run).
    - QUEUED and RUNNING whose worker process (the one that reserved the
      message, or claimed the studies) has stopped writing its heartbeat: it
      died (seconds); or, for claims without a process, for longer than a task may run.
    """
    now = now or timezone.now()
    if broker_replaced is None:
        broker_replaced = liveness.broker_was_replaced()
    counts = {"requeued": 0, "failed": 0}
    with transaction.atomic():
        received = Study.objects.filter(status=Study.Status.RECEIVED, created_at__lt=now - timedelta(seconds=60))
        silent = ~Q(claimed_by="") & ~Q(claimed_by__in=liveness.live_processes(now))
        queued = Study.objects.filter(status=Study.Status.QUEUED)
        if not broker_replaced:
            queued = queued.filter(
                Q(queued_at__lt=now - timedelta(seconds=settings.SCREENING_STUCK_QUEUED_SECONDS))
                | (Q(queued_at__lt=now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS)) & silent)
            )
        timed_out = Q(started_at__lt=now - timedelta(seconds=settings.SCREENING_STUCK_RUNNING_SECONDS))
        owner_dead = Q(started_at__lt=now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS)) & silent
        running = Study.objects.filter(timed_out | owner_dead, status=Study.Status.RUNNING)
        exhausted = running.filter(attempts__gte=settings.SCREENING_MAX_ATTEMPTS)
        counts["failed"] = exhausted.update(
            status=Study.Status.FAILED,
            status_message=(
                f"Scoring was interrupted {settings.SCREENING_MAX_ATTEMPTS} times (worker stopped or timed out); "
                "the file may be too demanding to process. Re-submit it or ask an administrator."
            ),
            finished_at=now,
        )
        ids = sorted(
            set(received.values_list("pk", flat=True))
            | set(queued.values_list("pk", flat=True))
            | set(running.values_list("pk", flat=True))
        )
        if ids:
            mark_queued(Study.objects.filter(pk__in=ids, status__in=Study.UNFINISHED), now)
            enqueue_studies_on_commit(ids)
        counts["requeued"] = len(ids)
    # Heartbeats of processes long gone (every restart adds a host:pid row).
    WorkerHeartbeat.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()
    if counts["requeued"] or counts["failed"]:
        log.warning(
            "sweep: re-queued %(requeued)d stuck studies, failed %(failed)d%(why)s",
            {**counts, "why": " (the broker came back empty)" if broker_replaced else ""},
        )
    return counts


def release_unfinished(study_ids: Sequence[int], reason: str) -> None:
    """Give claimed studies back to the queue after an interrupted run, or fail them once attempts run out."""
    with transaction.atomic():
        claimed = Study.objects.filter(pk__in=study_ids, status=Study.Status.RUNNING)
        claimed.filter(attempts__gte=settings.SCREENING_MAX_ATTEMPTS).update(
            status=Study.Status.FAILED, status_message=reason, finished_at=timezone.now()
        )
        retry = list(claimed.values_list("pk", flat=True))
        mark_queued(Study.objects.filter(pk__in=retry))
        enqueue_studies_on_commit(retry)
