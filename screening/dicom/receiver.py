"""Taking one DICOM instance from the network into the same intake as an upload.

A sender treats our success answer as "you have it now; I may delete my
copy". So an instance is answered with success only after its file is stored
(synced and verified) and its study row committed; anything that goes wrong
before that is answered with a status that makes the sender retry
(out of resources) or tells it the data are unusable (cannot understand).
A resend of an instance we already hold is a success that adds nothing: the
SOP Instance UID is recorded once, ever (``ReceivedInstance``).

The studies of one association form one batch; they are handed to the
workers in chunks as they arrive (and whatever is left when the association
ends), and the sweep sends any that a crash left behind.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import pydicom
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.db.models import F
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

from screening import audit
from screening.dicom.nodes import caller_allowed
from screening.intake import storage
from screening.intake.acceptance import Incoming, Limits, Refusal, expand
from screening.intake.submission import storage_path
from screening.models import DICOM_COLUMNS, AuditEvent, Batch, ReceivedInstance, Study
from screening.queue import enqueue_studies_on_commit
from screening.roles import SUBMITTER

log = logging.getLogger(__name__)

# C-STORE response statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # refused: the sender should try again later
DOES_NOT_MATCH_SOP_CLASS = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000

# Studies waiting in an association are published when this many have
# arrived or the oldest has waited this long, so a long association scores in
# chunks and a short one as soon as it ends.
_FLUSH_AFTER_SECONDS = 1.0

_HEADER_KEYWORDS = (*DICOM_COLUMNS, "StudyDate")

# Radiographs only: CR, DX for presentation and for processing, Secondary Capture.
STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)


@dataclass(frozen=True)
class Answer:
    status: int
    message: str = ""
    study_id: int | None = None
    duplicate: bool = False


def receiver_user():
    """The account received batches belong to: created with no usable password (it never logs in)."""
    user, created = get_user_model().objects.get_or_create(username=settings.DICOM_RECEIVER_USER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name=SUBMITTER))
        log.info("created the account %s that received DICOM batches belong to", user.username)
    return user


def _already_received(uid: str) -> Answer | None:
    """Success for a SOP Instance UID we hold (a resend adds nothing), else None."""
    earlier = ReceivedInstance.objects.filter(sop_instance_uid=uid).values_list("study_id", flat=True).first()
    return None if earlier is None else Answer(SUCCESS, "Already received.", study_id=earlier, duplicate=True)


def _dataset(data: bytes) -> pydicom.Dataset:
    """The parsed dataset, every element converted now.

    pydicom converts an element's value when it is first read, so a damaged
    element (an unknown VR, a wrong length) would otherwise raise later, in
    whichever line first touched it: here it raises while parsing, and the
    instance is answered "cannot understand".
    """
    dataset = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    dataset.walk(lambda _dataset, _element: None)
    return dataset


def _damage(dataset: pydicom.Dataset) -> str:
    """What makes the instance unusable, found without decoding pixels (the worker decodes); "" when nothing.

    Caught here so that the sender hears it ("cannot understand") and can
    resend a good copy, instead of us storing a study that can only fail.
    """
    if "PixelData" not in dataset:
        return "The dataset has no pixel data."
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_transfer_syntax:
        return f"The transfer syntax {str(syntax)[:64]} is not one the service knows."
    if syntax is not None and syntax.is_compressed:
        return ""
    try:
        expected = (
            int(dataset.Rows)
            * int(dataset.Columns)
            * int(dataset.get("SamplesPerPixel", 1) or 1)
            * int(dataset.get("NumberOfFrames", 1) or 1)
            * int(dataset.BitsAllocated)
            // 8
        )
    except (AttributeError, TypeError, ValueError):
        return "The image's size (Rows, Columns, Bits Allocated) is missing or malformed."
    if len(dataset.PixelData) < expected:
        return "The pixel data is shorter than the image it describes (truncated in transfer?)."
    return ""


class Inbox:
    """What one association has delivered: its batch and the studies not yet handed to the workers."""

    def __init__(self, *, calling_ae: str, peer: str, source: str = Batch.Source.DICOM, user=None):
        self.user = user  # None: the receiver account (associations carry no person)
        self.calling_ae = calling_ae
        self.peer = peer
        self.source = source
        self.batch_id: int | None = None
        self.received = 0
        self._waiting: list[int] = []
        self._oldest: float | None = None
        self._limits = Limits.from_settings()
        urgent = calling_ae and caller_allowed(settings.DICOM_URGENT_CALLERS, calling_ae, peer)
        self.priority = Study.Priority.URGENT if urgent else Study.Priority.ROUTINE

    def receive(self, data: bytes, sop_instance_uid: str = "") -> Answer:
        """Store and record one instance (``data``: the dataset with its file meta); the answer for the sender."""
        try:
            header = _dataset(data)
        except Exception as exc:  # pydicom raises many kinds on a damaged header
            log.warning("refused an instance from %s: unreadable dataset (%s)", self.calling_ae, type(exc).__name__)
            return Answer(CANNOT_UNDERSTAND, "The dataset could not be parsed.")
        damage = _damage(header)
        if damage:
            return Answer(CANNOT_UNDERSTAND, damage)
        sop_class = str(header.get("SOPClassUID", "") or "").strip()
        if sop_class not in STORAGE_CLASSES:
            # The listener never lets one in (no presentation context); STOW-RS parts get here.
            return Answer(SOP_CLASS_NOT_SUPPORTED, "Only CR, DX and Secondary Capture radiographs are accepted.")
        uid = str(header.get("SOPInstanceUID", "") or "").strip()
        if not uid:
            return Answer(CANNOT_UNDERSTAND, "The dataset has no SOP Instance UID.")
        if sop_instance_uid and sop_instance_uid.strip() != uid:
            return Answer(DOES_NOT_MATCH_SOP_CLASS, "The dataset's SOP Instance UID differs from the request's.")
        already = _already_received(uid)
        if already is not None:
            return already

        outcome = next(expand([(f"{uid}.dcm", io.BytesIO(data))], self._limits))
        if isinstance(outcome, Refusal):
            self._note_refusal(outcome)
            return Answer(CANNOT_UNDERSTAND, outcome.error)
        try:
            return self._record(outcome, header, uid)
        finally:
            outcome.spool.close()

    def _record(self, incoming: Incoming, header: pydicom.Dataset, uid: str) -> Answer:
        path = storage_path(incoming.sha256, incoming.format)
        try:
            storage.store_verified(path, incoming.spool, incoming.sha256, incoming.size)
        except storage.StorageUnavailable:
            return Answer(OUT_OF_RESOURCES, "Storage is full or not writable.")
        try:
            with transaction.atomic():
                batch_id = self.batch_id or self._new_batch()
                study = Study(
                    batch_id=batch_id,
                    original_name=incoming.name,
                    sha256=incoming.sha256,
                    size_bytes=incoming.size,
                    format=incoming.format,
                    file=path,
                    priority=self.priority,
                )
                study.record_dicom_header({keyword: header.get(keyword) for keyword in _HEADER_KEYWORDS})
                study.save()
                ReceivedInstance.objects.create(
                    sop_instance_uid=uid, study=study, calling_ae=self.calling_ae, peer=self.peer[:64]
                )
                Batch.objects.filter(pk=batch_id).update(files_received=F("files_received") + 1)
        except IntegrityError:
            # The same instance arrived at the same moment on another association
            # (or, within one batch, the same bytes under another UID: not DICOM).
            clash = Answer(CANNOT_UNDERSTAND, "The same pixel data arrived under two SOP Instance UIDs.")
            return _already_received(uid) or clash
        except DataError:
            # A value the database cannot hold (a NUL in a text attribute): the same copy would fail again.
            log.warning("refused an instance from %s: a header value cannot be stored", self.calling_ae)
            return Answer(CANNOT_UNDERSTAND, "A header value cannot be stored (a NUL character in a text attribute?).")
        except DatabaseError:
            log.exception("could not record an instance from %s; the sender will retry", self.calling_ae)
            return Answer(OUT_OF_RESOURCES, "The database is unavailable.")
        self.batch_id = batch_id  # only now: a rolled-back first instance leaves no batch to reuse
        self.received += 1
        self._waiting.append(study.pk)
        self._oldest = self._oldest or time.monotonic()
        if (
            len(self._waiting) >= settings.SCREENING_CHUNK_SIZE
            or time.monotonic() - self._oldest >= _FLUSH_AFTER_SECONDS
        ):
            self.flush()
        return Answer(SUCCESS, study_id=study.pk)

    def _new_batch(self) -> int:
        """The association's batch, created with its first instance (an echo or an empty association makes none)."""
        user = self.user or receiver_user()
        sender = f"{self.calling_ae} ({self.peer})" if self.calling_ae else self.peer
        what = "STOW-RS" if self.source == Batch.Source.DICOMWEB else "C-STORE"
        batch = Batch.objects.create(submitted_by=user, source=self.source, name=f"{what} from {sender}"[:255])
        audit.record(
            AuditEvent.Action.SUBMIT,
            actor=user,
            obj=batch,
            source=self.source,
            calling_ae=self.calling_ae,
            peer=self.peer,
        )
        return batch.pk

    def _note_refusal(self, refusal: Refusal) -> None:
        """Keep a refused instance in the batch's upload report when the association has a batch."""
        if self.batch_id is None:
            return
        try:
            with transaction.atomic():
                batch = Batch.objects.select_for_update().get(pk=self.batch_id)
                batch.upload_report = [*batch.upload_report, refusal.as_dict()]
                batch.files_received += 1
                batch.save(update_fields=["upload_report", "files_received", "updated_at"])
        except DatabaseError:
            log.exception("could not note a refused instance in batch %s", self.batch_id)

    def flush(self) -> None:
        """Hand the waiting studies to the workers (the sweep re-sends them if this fails)."""
        waiting, self._waiting, self._oldest = self._waiting, [], None
        if waiting:
            try:
                enqueue_studies_on_commit(waiting)
            except DatabaseError:
                log.exception("could not queue %d received studies; the sweep will", len(waiting))
