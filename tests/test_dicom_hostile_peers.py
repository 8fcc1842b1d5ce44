"""The DICOM listener process under hostile peers: idle sockets and 2 GiB association requests, against dcmtk.

Anyone who can reach the port can open connections; they must neither lock
allowed senders out nor make the listener buffer what they declare. The
listener runs as its own process (``manage.py dicom_listener``), so its memory
is read from ``/proc``.
"""

from __future__ import annotations

import subprocess

import pydicom
import pytest
from django.conf import settings as django_settings

from harness.dicom_peers import (
    DCMTK_TIMEOUT,
    ListenerProcess,
    available,
    closed_by_peer,
    free_port,
    idle_connections,
    oversized_request,
    radiograph_copies,
    rss_bytes,
    storescu,
)
from harness.worker_process import postgres_worker_env
from screening.models import ReceivedInstance

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(available(orthanc=False) is not None, reason=available(orthanc=False) or ""),
]

IDLE, OVERSIZED, SENDERS, FILES_EACH = 50, 10, 3, 3
PUSHED = 32 * 2**20  # what each oversized request tries to send after its header
MEMORY_ALLOWANCE = 50 * 2**20


@pytest.fixture
def listener(settings, tmp_path):
    if not getattr(django_settings, "USING_REAL_SERVICES", False):
        pytest.skip("PostgreSQL/Redis not reachable here (CI=true refuses this fallback)")
    env = postgres_worker_env(
        settings,
        DICOM_ALLOWED_CALLERS="STORESCU",
        # Long enough that every idle connection is still open while the senders send.
        DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS="60",
    )
    process = ListenerProcess(env, tmp_path / "listener.log", free_port()).start()
    yield process
    process.stop()


def test_storescu_gets_through_while_idle_and_oversized_connections_are_held_open(listener, tmp_path):
    warm_up = storescu(listener.port, radiograph_copies(tmp_path / "warm", 1), aec="PNEUMO")
    assert warm_up.returncode == 0, warm_up.stdout + warm_up.stderr + listener.log()
    before = rss_bytes(listener.process.pid)

    hostile = idle_connections(listener.port, IDLE)
    try:
        oversized = [oversized_request(listener.port, push=PUSHED) for _ in range(OVERSIZED)]
        hostile += [sock for sock, _ in oversized]
        corpus = [radiograph_copies(tmp_path / f"sender{i}", FILES_EACH) for i in range(SENDERS)]
        senders = [
            subprocess.Popen(
                ["storescu", "-aet", "STORESCU", "-aec", "PNEUMO", "-to", "10", "-ta", "10", "-td", "30"]
                + ["127.0.0.1", str(listener.port), *map(str, paths)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for paths in corpus
        ]
        outputs = [sender.communicate(timeout=DCMTK_TIMEOUT)[0] for sender in senders]
        after = rss_bytes(listener.process.pid)
        idle_still_open = sum(not closed_by_peer(sock) for sock in hostile[:IDLE])
    finally:
        for sock in hostile:
            sock.close()

    assert [s.returncode for s in senders] == [0] * SENDERS, "\n".join(outputs) + listener.log()
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for paths in corpus for p in paths}
    assert sent <= set(ReceivedInstance.objects.values_list("sop_instance_uid", flat=True))
    assert idle_still_open == IDLE, "the idle connections must still be open for the test to mean anything"
    assert all(pushed < PUSHED for _, pushed in oversized), "the listener read an oversized association request"
    assert after - before < MEMORY_ALLOWANCE, f"listener memory grew {(after - before) / 2**20:.0f} MiB"
