"""Retention: remove original files (and their display copies) past a retention period.

Originals carry patient data (DICOM headers, the image itself); results,
reviews and the audit trail are what a hospital must keep. Files are
content-addressed and shared by every study of the same bytes, so a file is
removed only when no study that still needs it (unfinished, or newer than the
cutoff and not purged) points at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from screening import audit, counters
from screening.intake.previews import preview_path
from screening.models import AuditEvent, Study

log = logging.getLogger(__name__)


@dataclass
class PurgeOutcome:
    studies: int = 0
    files: int = 0
    bytes: int = 0


def purge_originals(
    older_than_days: int, *, actor=None, dry_run: bool = False, scheduled: bool = False
) -> PurgeOutcome:
    """Remove the originals of finished studies created more than ``older_than_days`` days ago.

    ``scheduled`` (beat's housekeeping): a round that finds nothing due leaves
    no audit row, so the trail is not an hourly list of empty purges; a manual
    run is always recorded.
    """
    if older_than_days < 1:
        raise ValueError("The retention period must be at least one day.")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    due = Study.objects.filter(created_at__lt=cutoff, status__in=Study.FINISHED, file_purged_at__isnull=True)
    candidates = set(due.values_list("file", flat=True))
    still_needed = set(
        Study.objects.filter(file__in=candidates, file_purged_at__isnull=True)
        .exclude(pk__in=due.values("pk"))
        .values_list("file", flat=True)
    )
    removable = sorted(candidates - still_needed)
    outcome = PurgeOutcome(studies=due.count())
    if scheduled and not outcome.studies:
        return outcome
    if dry_run:
        outcome.files = len(removable)
        outcome.bytes = sum(_size(name) for name in removable)
        return outcome
    with transaction.atomic():
        # Marked first: a crash half-way leaves studies marked whose files may still exist
        # (a re-run removes them), never files gone from studies that claim to have them.
        shas = dict(due.values_list("file", "sha256"))
        purged = due.update(file_purged_at=timezone.now())
        outcome.studies = purged
        audit.record(
            AuditEvent.Action.PURGE,
            actor=actor,
            older_than_days=older_than_days,
            studies=purged,
            files=len(removable),
            scheduled=scheduled,
        )
        counters.add(counters.RETENTION_STUDIES_PURGED, purged)
    for name in removable:
        outcome.bytes += _remove(name)
        outcome.files += 1
        preview_path(shas[name]).unlink(missing_ok=True)
    counters.add(counters.RETENTION_FILES_REMOVED, outcome.files)
    log.info("purge: %d studies, %d files, %d bytes", outcome.studies, outcome.files, outcome.bytes)
    return outcome


def _size(name: str) -> int:
    try:
        return default_storage.size(name)
    except OSError:
        return 0


def _remove(name: str) -> int:
    size = _size(name)
    try:
        default_storage.delete(name)
    except OSError:
        log.warning("could not remove %s", name)
        return 0
    return size
