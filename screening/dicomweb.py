"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` with ``multipart/related; type="application/dicom"``.

For systems that speak HTTP rather than DIMSE (a VNA, a cloud gateway, a
script). Each part goes through the same intake as a C-STORE instance
(``screening.dicom.receiver``), so the two paths store, de-duplicate and
refuse identically; the request's parts form one batch of the token's user.
The response is the Store Instances Response of PS3.18 10.5.3 in DICOM JSON.

The body is spooled to a temporary file and parts are sliced from a memory
map, so a large request costs disk, not memory; the request size limit of the
whole service (SCREENING_MAX_REQUEST_MB) applies, each part the file limit.
"""

from __future__ import annotations

import mmap
import re
import tempfile
from collections.abc import Iterator

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from screening import access
from screening.api import _error, api_view
from screening.dicom.receiver import SUCCESS, Inbox
from screening.models import Batch

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


def _identity(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UIDs for the response, read leniently (a damaged part still gets a line)."""
    import io

    import pydicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        return str(header.get("SOPClassUID", "") or ""), str(header.get("SOPInstanceUID", "") or "")
    except Exception:
        return "", ""


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
    stored, failed = [], []
    try:
        for headers, data in _parts(body, boundary):
            sop_class, sop_instance = _identity(data)
            if headers.get("content-type", "application/dicom").split(";")[0].strip().lower() != "application/dicom":
                failed.append(_reference(sop_class, sop_instance, 0x0122))
                continue
            answer = inbox.receive(data)
            if answer.status == SUCCESS:
                stored.append(_reference(sop_class, sop_instance))
            else:
                failed.append(_reference(sop_class, sop_instance, answer.status))
    except MalformedBody as exc:
        inbox.flush()
        if not stored and not failed:
            return _error(400, "malformed_body", str(exc))
        failed.append(_reference("", "", 0xC000))
    inbox.flush()
    response: dict = {}
    if stored:
        response["00081199"] = _dicom_json_sequence(stored)
    if failed:
        response["00081198"] = _dicom_json_sequence(failed)
    # PS3.18 10.5.3.1: 200 all stored, 202 some stored, 409 none stored.
    status = 200 if not failed else 202 if stored else 409
    return JsonResponse(response, status=status, content_type="application/dicom+json")
