"""Submitting files: one transaction creates the batch and its studies, stores
their files, and hands them to the queue after commit.

The whole batch is one transaction, so the workers start on it only once it
is stored: files are written on a few threads (``_Storer``) while the next
upload is read and checked, which keeps that wait short.

Files are stored content-addressed (``studies/ab/abcdef….jpeg``): names that
users chose never become paths, the same bytes are stored once, and a file
written before a rolled-back transaction is simply reused next time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from screening import audit
from screening.intake import storage
from screening.intake.acceptance import Incoming, Limits, Refusal, expand
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


STUDIES_FOLDER = "studies"  # under MEDIA_ROOT: originals, fanned out by the first two hex digits


def storage_path(sha256: str, file_format: str) -> str:
    return f"{STUDIES_FOLDER}/{sha256[:2]}/{sha256}.{_EXTENSIONS[file_format]}"


class _Storer:
    """Stores accepted files on a few threads while the submission reads, hashes and checks the next ones.

    Storing a file is mostly waiting for the disk (``fsync``) and copying and
    hashing in C, all of which release the GIL; done in line, it was half of
    a 500-file submission. At most ``in_flight`` files are held open at once.
    Once a write has failed, ``store`` raises that failure instead of
    starting another (a full disk fails every file); ``finish`` raises the
    first failure; ``close`` waits for every write, so that a failed
    submission removes its files only once nothing can write another.
    """

    def __init__(self, written: list[str], threads: int = 4, in_flight: int = 8):
        self._written = written
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        self._slots = threading.BoundedSemaphore(in_flight)
        self._futures: list[Future] = []
        self._failure: BaseException | None = None

    def store(self, incoming: Incoming) -> str:
        """Start storing ``incoming`` (which this takes over, spool included) and return its storage name."""
        path = storage_path(incoming.sha256, incoming.format)
        self._slots.acquire()
        try:
            if self._failure is not None:
                raise self._failure
            self._futures.append(self._pool.submit(self._store, incoming, path))
        except BaseException:
            self._slots.release()
            incoming.spool.close()
            raise
        return path

    def _store(self, incoming: Incoming, path: str) -> None:
        try:
            # Verified; an intact earlier copy is reused. ``written`` lists what this submission wrote.
            stored = storage.store_verified(path, incoming.spool, incoming.sha256, incoming.size, sync_name=False)
            if stored:
                self._written.append(path)
        except BaseException as exc:
            self._failure = self._failure or exc
            raise
        finally:
            incoming.spool.close()
            self._slots.release()

    def finish(self) -> None:
        """Wait for every write, then make the new files' names durable: once for all, before the rows commit."""
        for future in self._futures:
            future.result()
        storage.sync_folders(self._written)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


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
    kind: str = Batch.Kind.CLINICAL,
    priority: str = Study.Priority.ROUTINE,
) -> SubmissionOutcome:
    """Accept what can be accepted from ``files`` as one new batch.

    ``priority`` (``Study.Priority``) is every study's: urgent studies are scored before routine work
    already queued.

    ``kind`` is VALIDATION only for a site validation's labelled films (``screening.governance.site_validation``).

    ``declaration`` is what the submitter says about the patients (group or
    age); every study of the batch carries it into its population verdict.
    Raises ``NothingAccepted`` (and stores nothing) when every file is refused.
    """
    limits = limits or Limits.from_settings()
    declaration = declaration or Declaration()
    written: list[str] = []
    try:
        return _submit(user, source, files, name, limits, declaration, kind, priority, written)
    except BaseException:
        # Nothing of a failed submission stays behind: its rows roll back, and
        # so do the files it wrote (files it reused belong to earlier studies).
        storage.remove(written)
        raise


def _submit(user, source, files, name, limits, declaration, kind, priority, written) -> SubmissionOutcome:
    storer = _Storer(written)
    try:
        return _submit_stored_by(storer, user, source, files, name, limits, declaration, kind, priority)
    finally:
        storer.close()


def _submit_stored_by(storer, user, source, files, name, limits, declaration, kind, priority) -> SubmissionOutcome:
    with transaction.atomic():
        batch = Batch.objects.create(submitted_by=user, source=source, name=name[:255], kind=kind)
        outcome = SubmissionOutcome(batch=batch)
        first_name_by_sha: dict[str, str] = {}
        received = 0
        quota = _remaining_quota(user)
        for item in expand(files, limits):
            received += 1
            if isinstance(item, Refusal):
                outcome.refusals.append(item)
                continue
            if item.sha256 in first_name_by_sha:
                item.spool.close()
                outcome.notes.append(
                    {"file": item.name, "note": f"Same content as {first_name_by_sha[item.sha256]}; stored once."}
                )
                continue
            if quota is not None and item.size > quota:
                item.spool.close()
                outcome.refusals.append(Refusal(item.name, _quota_message()))
                continue
            first_name_by_sha[item.sha256] = item.name
            outcome.studies.append(_new_study(batch, item, declaration, storer, priority))
            if quota is not None:
                quota -= item.size
        storer.finish()

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


def _new_study(batch: Batch, item: Incoming, declaration: Declaration, storer: _Storer, priority: str) -> Study:
    """An unsaved study with its file being stored (content-addressed, so storing twice is harmless)."""
    study = Study(
        batch=batch,
        original_name=item.name,
        sha256=item.sha256,
        size_bytes=item.size,
        format=item.format,
        priority=priority,
        **declaration.as_fields(),
    )
    study.file.name = storer.store(item)
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
