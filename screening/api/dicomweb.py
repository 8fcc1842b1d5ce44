"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` with ``multipart/related; type="application/dicom"``.

For systems that speak HTTP rather than DIMSE (a VNA, a cloud gateway, a
script). Each part goes through the same intake as a C-STORE instance
(``screening.dicom.receiver``), so the two paths store, de-duplicate and
refuse identically; the request's parts form one batch of the token's user.
The response is the Store Instances Response of PS3.18 10.5.3 in DICOM JSON.

Each part is judged and stored on its own, committed in its own transaction
(``Inbox.receive``), so a part that fails, for whatever reason, neither undoes
nor hides the parts stored before it: the answer lists every part, stored or
failed with its reason (PS3.18 Table I.2-2), and never turns into a 500. A part
fails with 0xC122 when its transfer syntax is not one the listener accepts
(the two paths read the same syntaxes), 0xC000 when it is not DICOM or cannot
be parsed, and 0xA700 (send it again) when storing it failed unexpectedly, as
the listener answers.

The body is spooled to a temporary file and parts are sliced from a memory
map, so a large request costs disk, not memory; the request size limit of the
whole service (SCREENING_MAX_REQUEST_MB) applies, each part the file limit.
"""

from __future__ import annotations

import io
import logging
import mmap
import re
import tempfile
from collections.abc import Collection, Iterator

import pydicom
from django.db import transaction
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from screening import access
from screening.api.v1 import _error, api_view
from screening.dicom.listener import transfer_syntaxes
from screening.dicom.receiver import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, Inbox
from screening.models import Batch

log = logging.getLogger(__name__)

# Store Instances Response Failure Reason (PS3.18 Table I.2-2) beside the C-STORE statuses.
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)
_COPY_CHUNK = 1 << 20


class MalformedBody(Exception):
    pass


def _parts(body: mmap.mmap, boundary: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """Each part's headers (lower-case names) and content, per RFC 2046 multipart syntax."""
    delimiter = b"--" + boundary
    position = body.find(delimiter)
    if position < 0:
        raise MalformedBody(_("The body has no part with the boundary its Content-Type names."))
    while True:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            return  # the close delimiter
        header_end = body.find(b"\r\n\r\n", position)
        following = body.find(b"\r\n" + delimiter, position)
        if header_end < 0 or following < 0 or header_end > following:
            raise MalformedBody(_("A part is not terminated by the boundary (truncated body?)."))
        headers = {}
        for line in body[position:header_end].decode("latin-1").split("\r\n"):
            name, _colon, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        yield headers, body[header_end + 4 : following]
        position = following + 2


def _dicom_json_sequence(items: list[dict]) -> dict:
    return {"vr": "SQ", "Value": items}


def _reference(sop_class: str, sop_instance: str, failure: int | None = None) -> dict:
    item = {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"},
    }
    if failure is not None:
        item["00081197"] = {"vr": "US", "Value": [failure]}
    return item


def _identity(data: bytes) -> tuple[str, str, str | None]:
    """SOP Class and Instance UIDs and the file meta's transfer syntax, read leniently.

    A damaged part still gets its line in the answer, with what could be read of it.
    """
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        syntax = header.file_meta.get("TransferSyntaxUID")
        return (
            str(header.get("SOPClassUID", "") or ""),
            str(header.get("SOPInstanceUID", "") or ""),
            None if syntax is None else str(syntax),
        )
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on damaged data; the intake judges the part
        return "", "", None


@transaction.non_atomic_requests  # each part commits on its own: "stored" in the answer must already be true
@api_view
@require_POST
def store_instances(request):
    if not access.can_submit(request.user):
        return _error(403, "forbidden", _("Your account may not submit studies."))
    content_type = request.META.get("CONTENT_TYPE", "")
    media_type = content_type.split(";")[0].strip().lower()
    part_type = (_TYPE.search(content_type) or [None, "application/dicom"])[1].lower()
    boundary = _BOUNDARY.search(content_type)
    if media_type != "multipart/related" or part_type != "application/dicom" or not boundary:
        return _error(
            415,
            "unsupported_media_type",
            _(
                'Send multipart/related; type="application/dicom"; boundary=... with one DICOM instance per part '
                "(PS3.18 STOW-RS). Metadata + bulk data requests are not supported."
            ),
        )
    with tempfile.TemporaryFile() as spool:
        while chunk := request.read(_COPY_CHUNK):
            spool.write(chunk)
        if spool.tell() == 0:
            return _error(400, "empty_body", _("The request body is empty."))
        spool.flush()
        with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as body:
            return _store_parts(request, body, boundary.group(1).encode("latin-1"))


def _store_parts(request, body: mmap.mmap, boundary: bytes) -> JsonResponse:
    inbox = Inbox(
        calling_ae="", peer=request.META.get("REMOTE_ADDR", ""), source=Batch.Source.DICOMWEB, user=request.user
    )
    syntaxes = frozenset(str(syntax) for syntax in transfer_syntaxes())
    stored, failed = [], []
    try:
        for number, (headers, data) in enumerate(_parts(body, boundary), start=1):
            was_stored, reference = _store_part(inbox, number, headers, data, syntaxes)
            (stored if was_stored else failed).append(reference)
    except MalformedBody as exc:
        if not stored and not failed:
            return _error(400, "malformed_body", str(exc))
        failed.append(_reference("", "", CANNOT_UNDERSTAND))
    finally:
        inbox.flush()
    response: dict = {}
    if stored:
        response["00081199"] = _dicom_json_sequence(stored)
    if failed:
        response["00081198"] = _dicom_json_sequence(failed)
    # PS3.18 10.5.3.1: 200 all stored, 202 some stored, 409 none stored.
    status = 200 if not failed else 202 if stored else 409
    return JsonResponse(response, status=status, content_type="application/dicom+json")


def _store_part(
    inbox: Inbox, number: int, headers: dict[str, str], data: bytes, syntaxes: Collection[str]
) -> tuple[bool, dict]:
    """Store one part, or say why not: whether it is stored, and its item of the answer (with a reason if not)."""
    sop_class, sop_instance, syntax = _identity(data)

    def failure(status: int, why: str) -> tuple[bool, dict]:
        log.warning(
            "STOW-RS part %d (%s) from %s not stored, 0x%04X: %s", number, sop_instance, inbox.peer, status, why
        )
        return False, _reference(sop_class, sop_instance, status)

    media_type = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if media_type != "application/dicom":
        return failure(CANNOT_UNDERSTAND, f"the part is {media_type[:64]}, not application/dicom")
    if syntax is not None and syntax not in syntaxes:
        return failure(TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {syntax[:64]} is not accepted")
    try:
        answer = inbox.receive(data)
    except Exception:
        log.exception("STOW-RS part %d from %s failed unexpectedly; answering 'out of resources'", number, inbox.peer)
        return False, _reference(sop_class, sop_instance, OUT_OF_RESOURCES)
    if answer.status != SUCCESS:
        return failure(answer.status, answer.message)
    return True, _reference(sop_class, sop_instance)
