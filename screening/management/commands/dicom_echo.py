"""``manage.py dicom_echo``: is a DICOM node there? C-ECHO the destinations, or our own listener.

    manage.py dicom_echo                       # every DICOM_DESTINATIONS entry
    manage.py dicom_echo PACS@10.0.0.7:104     # one node
    manage.py dicom_echo --listener            # our own listener (docker-compose's health check)

For whoever connects the service to a PACS: it tells a wrong AE title, port or
firewall apart before any result is waiting. For our own listener an
association that is rejected still proves it is up (the health check's
calling AE title need not be an allowed caller).
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from screening.dicom.nodes import Destination, InvalidNode


def echo(node: Destination, *, rejection_is_alive: bool = False) -> tuple[bool, str]:
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.DICOM_TIMEOUT_SECONDS
    ae.add_requested_context(Verification)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if assoc.is_rejected:
        return rejection_is_alive, "association rejected (our AE title is not an allowed caller there?)"
    if not assoc.is_established:
        return False, "no association (wrong host or port, or nothing listening)"
    try:
        response = assoc.send_c_echo()
    finally:
        assoc.release()
    status = int(response.Status) if response and "Status" in response else None
    if status == 0:
        return True, "C-ECHO success"
    return False, "no C-ECHO response" if status is None else f"C-ECHO status 0x{status:04X}"


class Command(BaseCommand):
    help = "C-ECHO DICOM nodes: the configured destinations, the ones named, or the local listener."

    def add_arguments(self, parser):
        parser.add_argument("nodes", nargs="*", help="AE@host:port (default: DICOM_DESTINATIONS)")
        parser.add_argument("--listener", action="store_true", help="echo this service's own listener")

    def handle(self, *args, nodes, listener, **options):
        if listener:
            host = "127.0.0.1" if settings.DICOM_BIND in ("0.0.0.0", "::", "") else settings.DICOM_BIND
            targets = [Destination(settings.DICOM_AE_TITLE, host, settings.DICOM_PORT)]
        else:
            try:
                targets = [Destination.parse(text) for text in nodes] or list(settings.DICOM_DESTINATIONS)
            except InvalidNode as exc:
                raise CommandError(str(exc)) from exc
        if not targets:
            raise CommandError("No node to echo: name one (AE@host:port) or set DICOM_DESTINATIONS.")
        failed = 0
        for target in targets:
            ok, detail = echo(target, rejection_is_alive=listener)
            failed += not ok
            self.stdout.write(f"{target}: {'OK' if ok else 'FAILED'} — {detail}")
        if failed:
            raise CommandError(f"{failed} of {len(targets)} DICOM nodes did not answer.")
