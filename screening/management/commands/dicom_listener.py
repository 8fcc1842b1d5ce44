"""``manage.py dicom_listener``: receive radiographs over DICOM (C-ECHO, C-STORE).

Settings come from the environment: DICOM_AE_TITLE, DICOM_PORT, DICOM_BIND,
DICOM_ALLOWED_CALLERS, DICOM_RECEIVER_USER, and the limits that keep strangers
from holding it down: DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS, DICOM_MAX_PDU_BYTES,
DICOM_MAX_ASSOCIATIONS, DICOM_MAX_ASSOCIATIONS_PER_PEER (see docs/dicom-conformance.md).
"""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from screening.dicom.listener import Listener
from screening.dicom.receiver import receiver_user


class Command(BaseCommand):
    help = "Run the DICOM listener (C-STORE SCP) that turns received radiographs into studies."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=None, help="Port (default: DICOM_PORT).")
        parser.add_argument("--bind", default=None, help="Address to listen on (default: DICOM_BIND).")
        parser.add_argument(
            "--optional",
            action="store_true",
            help="If the port cannot be opened, say so and stay up without listening (`make run`: a busy port "
            "must not stop the web app and the worker, which honcho stops when any process exits).",
        )

    def handle(self, *args, port, bind, optional, **options):
        receiver_user()  # fail now, not at the first instance, if the database is not migrated
        if not settings.DICOM_ALLOWED_CALLERS:
            self.stderr.write(
                "WARNING: DICOM_ALLOWED_CALLERS is empty, so every association will be refused. "
                "Name the senders, e.g. DICOM_ALLOWED_CALLERS='MODALITY1,PACS@10.0.0.7'."
            )
        listener = Listener(ae_title=settings.DICOM_AE_TITLE, callers=settings.DICOM_ALLOWED_CALLERS)
        address = (bind or settings.DICOM_BIND, port or settings.DICOM_PORT)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            listener.start(address, block=False)
        except OSError as exc:
            message = f"The DICOM listener cannot listen on {address[0]}:{address[1]} ({exc.strerror}); set DICOM_PORT."
            if not optional:
                raise CommandError(message) from exc
            self.stderr.write(f"WARNING: {message} Running without a DICOM listener.")
            stop.wait()
            return
        self.stdout.write(f"DICOM listener {settings.DICOM_AE_TITLE} on {address[0]}:{address[1]}", ending="\n")
        self.stdout.flush()
        stop.wait()
        listener.stop()
