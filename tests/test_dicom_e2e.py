"""The DICOM node against peers that are not ours: dcmtk's storescu/echoscu/dsrdump and Orthanc as PACS.

The listener and the worker run as their own processes, over PostgreSQL and
Redis, exactly as `make run` / docker-compose start them.
"""

from __future__ import annotations

import subprocess

import pydicom
import pytest
from django.conf import settings as django_settings

from harness.dicom_peers import (
    ListenerProcess,
    Orthanc,
    available,
    echoscu,
    free_port,
    radiograph_copies,
    storescu,
)
from harness.worker_process import WorkerProcess, postgres_worker_env, wait_until
from screening.models import Batch, Delivery, ReceivedInstance, Study

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def services(settings):
    if not getattr(django_settings, "USING_REAL_SERVICES", False):
        pytest.skip("PostgreSQL/Redis not reachable here (CI=true refuses this fallback)")
    import redis

    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.flushdb()
    yield
    client.flushdb()


def sr_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "report.dcm"
    path.write_bytes(data)
    done = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr
    return done.stdout


@pytest.mark.worker
def test_a_study_sent_with_storescu_comes_back_to_pacs_as_sr_and_heatmap(services, settings, tmp_path):
    with Orthanc(tmp_path / "pacs") as pacs:
        port = free_port()
        env = postgres_worker_env(
            settings,
            DICOM_ALLOWED_CALLERS="STORESCU",
            DICOM_DESTINATIONS=f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
            SCREENING_SWEEP_INTERVAL_SECONDS="2",
        )
        listener = ListenerProcess(env, tmp_path / "listener.log", port).start()
        worker = WorkerProcess(env, tmp_path / "worker.log", "--beat", "--schedule", str(tmp_path / "beat")).start()
        try:
            assert echoscu(port, aec="PNEUMO", aet="STORESCU").returncode == 0
            (path,) = radiograph_copies(tmp_path / "in", 1)
            sent = storescu(port, [path], aec="PNEUMO")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            source = pydicom.dcmread(path)
            study = Study.objects.get(sop_instance_uid=source.SOPInstanceUID)
            assert study.batch.source == Batch.Source.DICOM
            wait_until(
                lambda: Study.objects.get(pk=study.pk).status == Study.Status.DONE, timeout=240, describe=worker.log
            )
            instances = pacs.wait_for_instances(str(source.StudyInstanceUID), 2, timeout=120)
            # PACS has both objects a moment before the worker records the second as sent.
            wait_until(
                lambda: set(Delivery.objects.filter(result__study=study).values_list("status", flat=True)) == {"sent"},
                timeout=30,
                describe=worker.log,
            )
        finally:
            worker.stop()
            listener.stop()
        classes = sorted(i["SOPClassUID"] for i in instances)
        assert classes == ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.33"]
        assert {i["StudyInstanceUID"] for i in instances} == {str(source.StudyInstanceUID)}
        assert all(i["SeriesInstanceUID"] != str(source.SeriesInstanceUID) for i in instances)
        report = next(i for i in instances if i["SOPClassUID"].endswith(".88.33"))
        text = sr_text(pacs.instance_file(report["ID"]), tmp_path)
        result = study.results.get()
        assert "Pneumonia" in text
        assert f"{result.probability:.4f}"[:5] in text
        assert Delivery.objects.filter(result=result).count() == 2


def test_killing_the_listener_mid_association_loses_nothing_the_sender_was_told_was_stored(
    services, settings, tmp_path
):
    paths = radiograph_copies(tmp_path / "in", 50)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    port = free_port()
    env = postgres_worker_env(settings, DICOM_ALLOWED_CALLERS="STORESCU")
    first = ListenerProcess(env, tmp_path / "first.log", port).start()
    sender = subprocess.Popen(
        ["storescu", "-v", "-aet", "STORESCU", "-aec", "PNEUMO", "-to", "10", "-td", "30", "127.0.0.1", str(port)]
        + [str(p) for p in paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: ReceivedInstance.objects.count() >= 10, timeout=60, interval=0.01, describe=first.log)
    finally:
        first.kill_hard()
    output = sender.communicate(timeout=60)[0]
    acknowledged = output.count("Received Store Response (Success)")
    assert acknowledged < 50, "every instance arrived before the kill; the test proves nothing"
    stored = set(ReceivedInstance.objects.values_list("sop_instance_uid", flat=True))
    # storescu sends in the order given: the first `acknowledged` were answered with success.
    assert set(uids[:acknowledged]) <= stored, output

    second = ListenerProcess(env, tmp_path / "second.log", port).start()
    try:
        again = storescu(port, paths, aec="PNEUMO")
    finally:
        second.stop()
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(ReceivedInstance.objects.values_list("sop_instance_uid", flat=True)) == sorted(uids)
    assert Study.objects.count() == 50
    assert sorted(Study.objects.values_list("sop_instance_uid", flat=True)) == sorted(uids)


def test_the_listener_refuses_a_caller_it_was_not_told_about(services, settings, tmp_path):
    port = free_port()
    listener = ListenerProcess(
        postgres_worker_env(settings, DICOM_ALLOWED_CALLERS="MODALITY1"), tmp_path / "l.log", port
    ).start()
    try:
        refused = echoscu(port, aec="PNEUMO", aet="STRANGER")
        allowed = echoscu(port, aec="PNEUMO", aet="MODALITY1")
    finally:
        listener.stop()
    assert refused.returncode != 0
    assert "Rejected" in refused.stdout + refused.stderr
    assert allowed.returncode == 0


def test_a_busy_port_stops_the_listener_unless_it_is_optional(settings, tmp_path):
    """Production fails loudly; `make run` (--optional) keeps web and worker up, which honcho would stop."""
    import socket
    import sys
    import time

    from harness.worker_process import ROOT

    env = postgres_worker_env(settings, DICOM_ALLOWED_CALLERS="STORESCU")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, "manage.py", "dicom_listener", "--port", port]
        strict = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert strict.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in strict.stderr
        log = tmp_path / "optional.log"
        with log.open("w") as sink:
            optional = subprocess.Popen([*command, "--optional"], cwd=ROOT, env=env, stdout=sink, stderr=sink)
        try:
            wait_until(lambda: "Running without a DICOM listener" in log.read_text(), 120, describe=log.read_text)
            time.sleep(2)
            assert optional.poll() is None, "an optional listener must stay up: honcho stops everything when it exits"
        finally:
            optional.terminate()
            optional.wait(timeout=30)
        assert optional.returncode == 0
