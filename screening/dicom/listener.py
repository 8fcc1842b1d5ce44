"""The C-STORE SCP: modalities and PACS send radiographs here (``manage.py dicom_listener``).

pynetdicom runs each association in its own thread; each thread has its own
database connection, closed when the association ends. What the listener
accepts is written down in ``docs/dicom-conformance.md``: keep the two in step.

Anyone who can reach the port can open a connection, so until the allow-list
has accepted an association a connection gets little: a few seconds to send
its A-ASSOCIATE-RQ, no read longer than ``MAX_REQUEST_PDU_BYTES`` and no slot
among the associations (only accepted associations count against
``DICOM_MAX_ASSOCIATIONS`` and ``DICOM_MAX_ASSOCIATIONS_PER_PEER``).
``bench.dicom_receive --idle --oversized`` measures it under such peers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time

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

# Nothing read before the association is accepted may be longer: an A-ASSOCIATE-RQ
# proposing all 128 presentation contexts with a dozen transfer syntaxes each is
# about 45 KB. pynetdicom would otherwise read whatever length a stranger declares
# into memory, 2 GiB included.
MAX_REQUEST_PDU_BYTES = 64 * 1024
# DUL states (PS3.8 9.2) in which P-DATA-TF PDUs may arrive: the association was accepted.
_ESTABLISHED = ("Sta6", "Sta7")
# A-ASSOCIATE-RJ rejected-transient, service-provider (presentation), local-limit-exceeded.
_BUSY = (0x02, 0x03, 0x02)
# Each connection's DUL thread polls its socket every ``_run_loop_delay`` seconds
# (pynetdicom 3.0: 1 ms). Fifty silent connections doing that would keep the GIL
# from the associations at work, so until the association is accepted it polls
# every 20 ms, which delays the answer to a request by as much.
_POLL_SECONDS_BEFORE_ACCEPTED = 0.02
_POLL_SECONDS_ACCEPTED = 0.001

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
        self.timeout = settings.DICOM_TIMEOUT_SECONDS
        self.request_timeout = settings.DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS
        self.max_associations = settings.DICOM_MAX_ASSOCIATIONS
        self.max_associations_per_peer = settings.DICOM_MAX_ASSOCIATIONS_PER_PEER
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = settings.DICOM_MAX_PDU_BYTES  # announced, and enforced by _BoundedReads
        self.ae.network_timeout = self.timeout
        self.ae.dimse_timeout = self.timeout
        self.ae.acse_timeout = self.timeout
        # pynetdicom's own limit counts every open connection, silent ones included, so
        # ten idle sockets would lock every sender out; ours (_admit) counts accepted
        # associations only.
        self.ae.maximum_associations = sys.maxsize
        self.ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        # A CT or MR never gets a presentation context, so its sender learns at association time.
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, syntaxes)
        self._inboxes: dict[int, Inbox] = {}
        self._admitted: list = []  # accepted associations (threads), pruned as they end
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

    # --- event handlers (each runs in the association's thread; EVT_CONN_OPEN before it starts) ---

    def _on_connection(self, event) -> None:
        """Give the new connection ``request_timeout`` to send its A-ASSOCIATE-RQ, and bound what it may send.

        The ACSE timeout is pynetdicom's ARTIM timer while it waits for the
        request: a connection that sends nothing is closed when it expires.
        It is set back to ``DICOM_TIMEOUT_SECONDS`` once the request is in, and
        the DUL's polling to pynetdicom's own pace once it is accepted.
        """
        assoc = event.assoc
        assoc.acse_timeout = self.request_timeout
        assoc.dul._run_loop_delay = _POLL_SECONDS_BEFORE_ACCEPTED
        transport = assoc.dul.socket
        sock = getattr(transport, "socket", None)
        if sock is None:
            return
        transport.recv = _BoundedReads(
            assoc,
            sock,
            deadline=time.monotonic() + self.request_timeout,
            max_pdu=self.ae.maximum_pdu_size,
            timeout=self.timeout,
        )

    def _admit(self, assoc) -> bool:
        """Count ``assoc`` among the accepted associations, unless the listener or its peer's address is full.

        An association is counted while its thread runs, however it ends.
        """
        address = assoc.requestor.address
        with self._lock:
            self._admitted = [other for other in self._admitted if other.is_alive()]
            from_peer = sum(1 for other in self._admitted if other.requestor.address == address)
            if len(self._admitted) >= self.max_associations or from_peer >= self.max_associations_per_peer:
                log.warning(
                    "refused an association from %s: %d associations open, %d of them from that address "
                    "(DICOM_MAX_ASSOCIATIONS=%d, DICOM_MAX_ASSOCIATIONS_PER_PEER=%d)",
                    address,
                    len(self._admitted),
                    from_peer,
                    self.max_associations,
                    self.max_associations_per_peer,
                )
                return False
            self._admitted.append(assoc)
            return True

    def _on_requested(self, event) -> None:
        """Refuse a caller not allowed (A-ASSOCIATE-RJ: calling AE title not recognised), then one over a limit.

        Over ``DICOM_MAX_ASSOCIATIONS`` or ``DICOM_MAX_ASSOCIATIONS_PER_PEER`` the
        rejection is transient (local limit exceeded): the sender may try again.
        """
        assoc = event.assoc
        assoc.acse_timeout = self.timeout
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        address = assoc.requestor.address
        if not nodes.caller_allowed(self.callers, calling, address):
            log.warning("refused an association from %s at %s: not in DICOM_ALLOWED_CALLERS", calling, address)
            assoc.acse.send_reject(0x01, 0x01, 0x03)
        elif not self._admit(assoc):
            assoc.acse.send_reject(*_BUSY)
        else:
            assoc.dul._run_loop_delay = _POLL_SECONDS_ACCEPTED
            return
        # As pynetdicom's own refusals do: let the upper layer send the
        # A-ASSOCIATE-RJ before the socket is shut down.
        assoc.kill()

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


class _BoundedReads:
    """What pynetdicom may read from one connection: it replaces the connection's ``AssociationSocket.recv``.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type and length), then
    ``recv(length)`` with the length the peer declared, all into memory. Until
    the association is accepted (so until the allow-list has been consulted) no
    read may ask for more than ``MAX_REQUEST_PDU_BYTES`` and every read must be
    done by the request deadline, so a peer trickling its request a byte at a
    time is dropped too. Once accepted, a read may ask for up to the maximum
    PDU length we announced and may wait ``DICOM_TIMEOUT_SECONDS`` for each
    piece. A read that breaks these rules shuts the connection down and returns
    short, which the DUL takes for a closed connection.

    Each read also sets Linux's TCP_QUICKACK, and the connection TCP_NODELAY.
    Most senders (DCMTK's storescu by default, pynetdicom) write a C-STORE
    request as two small segments with Nagle's algorithm on: the second waits
    for our ACK of the first, which Linux delays by 40 ms. That capped one
    association at about 17 instances a second (``bench.dicom_receive``).
    QUICKACK is not sticky, so it is set again after each read.
    """

    def __init__(self, assoc, sock: socket.socket, *, deadline: float, max_pdu: int, timeout: float):
        self._assoc, self._sock = assoc, sock
        self._deadline, self._max_pdu, self._timeout = deadline, max_pdu, timeout
        self._quickack = hasattr(socket, "TCP_QUICKACK")
        sock.settimeout(timeout)  # sends too: a peer that stops reading cannot hold the thread forever
        if self._quickack:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __call__(self, nr_bytes: int) -> bytearray:
        accepted = self._assoc.dul.state_machine.current_state in _ESTABLISHED
        limit = self._max_pdu if accepted else MAX_REQUEST_PDU_BYTES
        if nr_bytes > limit:
            log.warning(
                "closed the connection from %s: it declared a PDU of %d bytes, over the %d allowed %s",
                self._assoc.requestor.address,
                nr_bytes,
                limit,
                "in an association (DICOM_MAX_PDU_BYTES)" if accepted else "before an association is accepted",
            )
            return self._hang_up(bytearray())
        data = bytearray()
        try:
            while len(data) < nr_bytes:
                if not accepted:
                    wait = self._deadline - time.monotonic()
                    if wait <= 0:
                        raise TimeoutError
                    self._sock.settimeout(wait)
                chunk = self._sock.recv(min(nr_bytes - len(data), 65536))
                if not chunk:  # the peer closed the connection
                    break
                data += chunk
                self._acknowledge()
        except TimeoutError:
            log.warning(
                "closed the connection from %s: %s",
                self._assoc.requestor.address,
                f"no data for {self._timeout} s in the middle of a PDU (DICOM_TIMEOUT_SECONDS)"
                if accepted
                else "no complete association request in time (DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS)",
            )
            return self._hang_up(data)
        except OSError:  # reset by the peer, or closed here meanwhile
            return data
        finally:
            if not accepted:
                self._settimeout(self._timeout)
        return data

    def _acknowledge(self) -> None:
        if self._quickack:
            with contextlib.suppress(OSError):  # the connection closed meanwhile
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _settimeout(self, seconds: float) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile
            self._sock.settimeout(seconds)

    def _hang_up(self, data: bytearray) -> bytearray:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        return data
