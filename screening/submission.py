"""Submitting files: one transaction creates the batch and its studies, stores
their files, and hands them to the queue after commit.

Files are stored content-addressed (``studies/ab/abcdef….jpeg``): names that
users chose never become paths, the same bytes are stored once, and a file
written before a rolled-back transaction is simply reused next time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from screening import audit, storage
from screening.intake import Incoming, Limits, Refusal, expand
from screening.models import AuditEvent, Batch, Study
from screening.population import Declaration
from screening.queue import enqueue_studies_on_commit

log = logging.getLogger(__name__)

_EXTENSIONS = {"jpeg": "jpg", "png": "png", "dicom": "dcm"}


class NothingAccepted(Exception):
    """No file of the submission could be accepted; nothing was stored."""

    def __init__(self, refusals: list[Refusal]):
        super().__init__("no file could be accepted")
        self.refusals = refusals


@dataclass
class SubmissionOutcome:
    batch: Batch
    studies: list[Study] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)


def storage_path(sha256: str, file_format: str) -> str:
    return f"studies/{sha256[:2]}/{sha256}.{_EXTENSIONS[file_format]}"


def _store(incoming: Incoming, written: list[str]) -> str:
    """Store the file (verified; an intact earlier copy is reused) and note it in ``written`` if this call wrote it."""
    path = storage_path(incoming.sha256, incoming.format)
    if storage.store_verified(path, incoming.spool, incoming.sha256, incoming.size):
        written.append(path)
    return path


def _earlier_scored_studies(sha256s: list[str]) -> dict[str, Study]:
    """The newest scored original study of each of these contents, in one query."""
    earlier: dict[str, Study] = {}
    for study in (
        Study.objects.filter(sha256__in=sha256s, status=Study.Status.DONE, duplicate_of__isnull=True)
        .select_related("batch")
        .order_by("sha256", "-created_at")
    ):
        earlier.setdefault(study.sha256, study)
    return earlier


def submit(
    user,
    source: str,
    files: Iterable[tuple[str, BinaryIO]],
    *,
    name: str = "",
    limits: Limits | None = None,
    declaration: Declaration | None = None,
) -> SubmissionOutcome:
    """Accept what can be accepted from ``files`` as one new batch.

    ``declaration`` is what the submitter says about the patients (group or
    age); every study of the batch carries it into its population verdict.
    Raises ``NothingAccepted`` (and stores nothing) when every file is refused.
    """
    limits = limits or Limits.from_settings()
    declaration = declaration or Declaration()
    written: list[str] = []
    try:
        return _submit(user, source, files, name, limits, declaration, written)
    except BaseException:
        # Nothing of a failed submission stays behind: its rows roll back, and
        # so do the files it wrote (files it reused belong to earlier studies).
        storage.remove(written)
        raise


def _submit(user, source, files, name, limits, declaration, written) -> SubmissionOutcome:
    with transaction.atomic():
        batch = Batch.objects.create(submitted_by=user, source=source, name=name[:255])
        outcome = SubmissionOutcome(batch=batch)
        first_name_by_sha: dict[str, str] = {}
        received = 0
        quota = _remaining_quota(user)
        for item in expand(files, limits):
            received += 1
            if isinstance(item, Refusal):
                outcome.refusals.append(item)
                continue
            try:
                if item.sha256 in first_name_by_sha:
                    outcome.notes.append(
                        {"file": item.name, "note": f"Same content as {first_name_by_sha[item.sha256]}; stored once."}
                    )
                    continue
                if quota is not None and item.size > quota:
                    outcome.refusals.append(Refusal(item.name, _quota_message()))
                    continue
                first_name_by_sha[item.sha256] = item.name
                outcome.studies.append(_new_study(batch, item, declaration, written))
                if quota is not None:
                    quota -= item.size
            finally:
                item.spool.close()

        if not outcome.studies:
            transaction.set_rollback(True)
            raise NothingAccepted(outcome.refusals)
        _link_to_earlier_results(outcome.studies)
        # One INSERT for the whole batch (primary keys come back on PostgreSQL and SQLite).
        outcome.studies = Study.objects.bulk_create(outcome.studies)

        batch.files_received = received
        batch.upload_report = [r.as_dict() for r in outcome.refusals] + outcome.notes
        batch.save(update_fields=["files_received", "upload_report", "updated_at"])
        audit.record(
            AuditEvent.Action.SUBMIT,
            actor=user,
            obj=batch,
            source=source,
            **({"declared": declaration.as_fields()} if declaration else {}),
            studies=len(outcome.studies),
            refused=len(outcome.refusals),
        )
        enqueue_studies_on_commit([s.pk for s in outcome.studies if s.status == Study.Status.RECEIVED])
    # The commit has published the studies (QUEUED) unless the broker was down
    # (RECEIVED): report what is true now, not what was true at creation.
    statuses = dict(Study.objects.filter(pk__in=[s.pk for s in outcome.studies]).values_list("pk", "status"))
    for study in outcome.studies:
        study.status = statuses.get(study.pk, study.status)
    log.info("batch %s submitted: %d studies, %d refused", batch.pk, len(outcome.studies), len(outcome.refusals))
    return outcome


def _remaining_quota(user) -> int | None:
    """Bytes ``user`` may still store (originals not yet purged count), or None when there is no quota."""
    limit = settings.SCREENING_USER_QUOTA_BYTES
    if not limit:
        return None
    used = Study.objects.filter(batch__submitted_by=user, file_purged_at__isnull=True).aggregate(n=Sum("size_bytes"))
    return max(0, limit - (used["n"] or 0))


def _quota_message() -> str:
    mb = settings.SCREENING_USER_QUOTA_BYTES // (1024 * 1024)
    return (
        f"Your storage quota of {mb} MB is used up; file not accepted. Older originals are removed under the "
        "retention policy, or ask an administrator to raise SCREENING_USER_QUOTA_MB."
    )


def _new_study(batch: Batch, item: Incoming, declaration: Declaration, written: list[str]) -> Study:
    """An unsaved study with its file stored (content-addressed, so storing twice is harmless)."""
    study = Study(
        batch=batch,
        original_name=item.name,
        sha256=item.sha256,
        size_bytes=item.size,
        format=item.format,
        **declaration.as_fields(),
    )
    study.file.name = _store(item, written)
    return study


def _duplicate_note(study: Study, earlier: Study) -> str:
    """Name the earlier study only to the user who submitted it: ids of another user's studies stay private."""
    if earlier.batch.submitted_by_id == study.batch.submitted_by_id:
        return f"Identical to study {earlier.pk} (batch {earlier.batch_id}), already scored; its result is shown."
    return "Identical to a file the service has already scored; that result is shown."


def _link_to_earlier_results(studies: list[Study]) -> None:
    """Studies of a file that an earlier batch already scored show that result instead of queueing again.

    Only when the submitter declared the same about the patient: the
    population verdict depends on the declaration, so a file declared
    differently is scored again and gets a verdict of its own.
    """
    earlier_by_sha = _earlier_scored_studies([s.sha256 for s in studies])
    now = timezone.now()
    for study in studies:
        earlier = earlier_by_sha.get(study.sha256)
        if earlier is None or (earlier.declared_population, earlier.declared_age_years) != (
            study.declared_population,
            study.declared_age_years,
        ):
            continue
        study.file.name = earlier.file.name
        study.status = Study.Status.DONE
        study.duplicate_of = earlier
        study.finished_at = now
        study.status_message = _duplicate_note(study, earlier)
        for attribute in (
            "score",
            "model_label",
            "image_width",
            "image_height",
            "study_instance_uid",
            "accession_number",
            "series_instance_uid",
            "sop_instance_uid",
            "study_date",
            "modality",
            "view_position",
            "body_part",
            "patient_age",
            "population",
            "population_reason",
        ):
            setattr(study, attribute, getattr(earlier, attribute))
