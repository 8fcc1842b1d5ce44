"""Sending one DICOM object to a destination with C-STORE, and saying plainly what happened."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pydicom
from django.conf import settings
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.status import code_to_category

from screening.dicom.nodes import Destination

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sent:
    """``status`` is the destination's DIMSE answer, or None when none came (no connection, no association)."""

    status: int | None
    error: str = ""

    @property
    def delivered(self) -> bool:
        # Warnings (0xB000, 0xB006, 0xB007: coerced or discarded elements) still mean "stored".
        return self.status is not None and code_to_category(self.status) in ("Success", "Warning")

    @property
    def refused(self) -> bool:
        """The destination answered and said no for a reason other than its resources: retrying changes nothing."""
        return self.status is not None and not self.delivered and (self.status >> 8) != 0xA7


def store(destination: Destination, dataset: pydicom.Dataset) -> Sent:
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.DICOM_TIMEOUT_SECONDS
    context = build_context(dataset.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(destination.host, destination.port, contexts=[context], ae_title=destination.ae_title)
    except OSError as exc:  # name resolution
        return Sent(None, f"Could not reach {destination}: {exc}")
    if not assoc.is_established:
        why = "refused the association" if assoc.is_rejected else "could not be reached (no association)"
        return Sent(None, f"{destination} {why}.")
    try:
        response = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    if not response or "Status" not in response:
        return Sent(None, f"{destination} did not answer the C-STORE (timeout or connection lost).")
    status = int(response.Status)
    if code_to_category(status) in ("Success", "Warning"):
        return Sent(status)
    comment = str(response.get("ErrorComment", "") or "").strip()
    return Sent(
        status,
        f"{destination} answered 0x{status:04X} ({code_to_category(status)}){': ' + comment if comment else ''}.",
    )
