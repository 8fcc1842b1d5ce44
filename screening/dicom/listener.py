"""The C-STORE SCP: modalities and PACS send radiographs here (``manage.py dicom_listener``).

pynetdicom runs each association in its own thread; each thread has its own
database connection, closed when the association ends. What the listener
accepts is written down in ``docs/dicom-conformance.md``: keep the two in step.
"""

from __future__ import annotations

import logging
import socket
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from screening.dicom import nodes
from screening.dicom.receiver import STORAGE_CLASSES, Inbox

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
_COMPRESSED = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


def transfer_syntaxes() -> list[UID]:
    """Every syntax the decoder can read here: uncompressed, and the compressions with an installed plugin."""
    from pydicom.pixels import get_decoder

    decodable = []
    for syntax in _COMPRESSED:
        try:
            if get_decoder(syntax).is_available:
                decodable.append(syntax)
        except NotImplementedError:
            continue
    return [*_UNCOMPRESSED, *decodable]


class Listener:
    """One AE serving C-ECHO and C-STORE, with one ``Inbox`` per association."""

    def __init__(self, *, ae_title: str, callers: tuple[nodes.Caller, ...]):
        self.callers = callers
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = 0  # no limit on what we receive in one PDU
        self.ae.network_timeout = settings.DICOM_TIMEOUT_SECONDS
        self.ae.dimse_timeout = settings.DICOM_TIMEOUT_SECONDS
        self.ae.acse_timeout = settings.DICOM_TIMEOUT_SECONDS
        self.ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        # A CT or MR never gets a presentation context, so its sender learns at association time.
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, syntaxes)
        self._inboxes: dict[int, Inbox] = {}
        self._lock = threading.Lock()
        self._server = None

    def handlers(self) -> list:
        return [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]

    def start(self, address: tuple[str, int], *, block: bool = True):
        log.info(
            "DICOM listener %s on %s:%d (callers allowed: %s)",
            self.ae.ae_title,
            *address,
            ", ".join(map(str, self.callers)) or "none",
        )
        self._server = self.ae.start_server(address, block=block, evt_handlers=self.handlers())
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    # --- event handlers (each runs in the association's thread) ---------------

    def _on_connection(self, event) -> None:
        """Acknowledge every read at once (Linux TCP_QUICKACK) and send every response at once (TCP_NODELAY).

        Most senders (DCMTK's storescu by default, pynetdicom) write a C-STORE
        request as two small segments with Nagle's algorithm on: the second
        waits for our ACK of the first, which Linux delays by 40 ms. That
        capped one association at about 17 instances a second
        (``bench.dicom_receive``). QUICKACK is not sticky, so it is set again
        after each read.
        """
        transport = event.assoc.dul.socket
        sock = getattr(transport, "socket", None)
        if sock is None or not hasattr(socket, "TCP_QUICKACK"):
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        read = transport.recv

        def recv_and_ack(nr_bytes: int) -> bytearray:
            data = read(nr_bytes)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:  # the connection closed meanwhile
                pass
            return data

        transport.recv = recv_and_ack

    def _on_requested(self, event) -> None:
        """Refuse the association (A-ASSOCIATE-RJ: calling AE title not recognised) from a caller not allowed."""
        calling = event.assoc.requestor.primitive.calling_ae_title.strip()
        address = event.assoc.requestor.address
        if not nodes.caller_allowed(self.callers, calling, address):
            log.warning("refused an association from %s at %s: not in DICOM_ALLOWED_CALLERS", calling, address)
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            # As pynetdicom's own refusals do: let the upper layer send the
            # A-ASSOCIATE-RJ before the socket is shut down.
            event.assoc.kill()

    def _inbox(self, assoc) -> Inbox:
        with self._lock:
            inbox = self._inboxes.get(id(assoc))
            if inbox is None:
                inbox = Inbox(calling_ae=assoc.requestor.ae_title.strip(), peer=assoc.requestor.address)
                self._inboxes[id(assoc)] = inbox
            return inbox

    def _on_store(self, event) -> int:
        close_old_connections()  # a connection the database dropped since the last instance
        try:
            data = event.encoded_dataset(include_meta=True)
            answer = self._inbox(event.assoc).receive(data, str(event.request.AffectedSOPInstanceUID or ""))
        except Exception:
            log.exception("receiving an instance failed unexpectedly; answering 'out of resources' so it is resent")
            return 0xA700
        if answer.status:
            log.warning("answered 0x%04X to %s: %s", answer.status, event.assoc.requestor.ae_title, answer.message)
        return answer.status

    def _on_end(self, event) -> None:
        with self._lock:
            inbox = self._inboxes.pop(id(event.assoc), None)
        if inbox is not None:
            inbox.flush()
            if inbox.batch_id is not None:
                log.info(
                    "association from %s ended: %d instances in batch %s",
                    inbox.calling_ae,
                    inbox.received,
                    inbox.batch_id,
                )
        connection.close()
