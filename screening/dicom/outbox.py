"""Results of DICOM studies going back to PACS: planned with the result, sent until they arrive.

A ``Delivery`` row is written in the transaction that writes the result, so
a result can never exist without its deliveries. Sending is driven by the
rows, not by messages: the task sends one due row; the beat's sweep queues
every due row again, so a lost message, a worker crash or a destination that
is down for hours only delays the object. The objects' UIDs are derived from
the source instance and the model version, so an object sent twice (a send
whose answer was lost) is filed once by the destination.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from screening.dicom import results, sender
from screening.dicom.nodes import Destination
from screening.models import Batch, Delivery, Result, Study
from screening.queue import enqueue_deliveries_on_commit

log = logging.getLogger(__name__)

# A send holds its row this long; a worker that dies mid-send leaves it to the sweep after that.
_LEASE = timedelta(minutes=2)
_FIRST_BACKOFF_SECONDS = 10


def plan(result_ids: Iterable[int]) -> int:
    """Create the missing deliveries of these results (DICOM studies only); queue the new ones after the commit.

    Returns how many were created: a delivery that exists (sent, pending or
    failed) is left as it is, so planning twice sends nothing twice.
    """
    destinations = settings.DICOM_DESTINATIONS
    if not destinations:
        return 0
    now = timezone.now()
    dicom_results = list(
        Result.objects.filter(
            pk__in=list(result_ids), study__format=Study.Format.DICOM, study__batch__kind=Batch.Kind.CLINICAL
        ).values_list("pk", flat=True)
    )
    existing = set(Delivery.objects.filter(result_id__in=dicom_results).values_list("result_id", "destination", "kind"))
    rows = [
        Delivery(result_id=pk, destination=str(destination), kind=kind, next_attempt_at=now)
        for pk in dicom_results
        for destination in destinations
        for kind in Delivery.Kind.values
        if (pk, str(destination), kind) not in existing
    ]
    if not rows:
        return 0
    with transaction.atomic():
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
        created = Delivery.objects.filter(
            result_id__in=dicom_results, status=Delivery.Status.PENDING, created_at__gte=now
        ).values_list("pk", flat=True)
        enqueue_deliveries_on_commit(list(created))
    return len(rows)


def _backoff(attempts: int) -> timedelta:
    seconds = _FIRST_BACKOFF_SECONDS * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, settings.DICOM_SEND_MAX_BACKOFF_SECONDS))


def send(delivery_id: int) -> str:
    """Send one delivery if it is pending and due; returns its status afterwards. Safe to run twice."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now).update(
        next_attempt_at=now + _LEASE, attempts=F("attempts") + 1, updated_at=now
    )
    if not claimed:
        return "skipped"
    delivery = Delivery.objects.select_related("result__study").get(pk=delivery_id)
    try:
        dataset = results.build(delivery.result, delivery.kind)
    except results.SourceUnavailable as exc:
        return _finish(delivery, Delivery.Status.FAILED, error=str(exc))
    except Exception as exc:
        log.exception("building the %s of result %s failed", delivery.kind, delivery.result_id)
        return _finish(delivery, Delivery.Status.FAILED, error=f"The object could not be built ({type(exc).__name__}).")
    outcome = sender.store(Destination.parse(delivery.destination), dataset)
    uid = str(dataset.SOPInstanceUID)
    if outcome.delivered:
        return _finish(delivery, Delivery.Status.SENT, dimse_status=outcome.status, uid=uid)
    if outcome.refused or timezone.now() - delivery.created_at > timedelta(hours=settings.DICOM_SEND_GIVE_UP_HOURS):
        return _finish(delivery, Delivery.Status.FAILED, dimse_status=outcome.status, error=outcome.error, uid=uid)
    retry_at = timezone.now() + _backoff(delivery.attempts)
    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING).update(
        next_attempt_at=retry_at,
        last_error=f"{outcome.error} Next try at {retry_at:%H:%M:%S} UTC.",
        dimse_status=outcome.status,
        sop_instance_uid=uid,
        updated_at=timezone.now(),
    )
    log.warning("sending %s: %s (attempt %d)", delivery, outcome.error, delivery.attempts)
    return Delivery.Status.PENDING


def _finish(delivery: Delivery, status: str, *, error: str = "", dimse_status=None, uid: str = "") -> str:
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status,
        last_error=error,
        dimse_status=dimse_status,
        sop_instance_uid=uid or delivery.sop_instance_uid,
        sent_at=now if status == Delivery.Status.SENT else None,
        next_attempt_at=None,
        updated_at=now,
    )
    if status == Delivery.Status.FAILED:
        log.error("giving up on %s: %s", delivery, error)
    return status


def queue_due(now=None) -> int:
    """Queue every pending delivery whose time has come (run by the beat's sweep)."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now).values_list("pk", flat=True)[
            :500
        ]
    )
    if due:
        with transaction.atomic():
            enqueue_deliveries_on_commit(due)
    return len(due)


def send_again(deliveries: QuerySet[Delivery]) -> int:
    """An administrator's "send again": sent or failed, each delivery goes out once more (same UIDs)."""
    with transaction.atomic():
        ids = list(deliveries.values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error="", sent_at=None
        )
        enqueue_deliveries_on_commit(ids)
    return len(ids)
