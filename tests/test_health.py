"""Liveness and readiness: what a load balancer learns without logging in, and what an operator learns."""

from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from screening.models import WorkerHeartbeat

DETAILS_TOKEN = "health-details-s3cret"


@pytest.fixture
def operator(settings) -> Client:
    """A monitor holding HEALTH_DETAILS_TOKEN: it is told each check of /readyz."""
    settings.HEALTH_DETAILS_TOKEN = DETAILS_TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {DETAILS_TOKEN}")


def test_liveness_needs_nothing_but_the_process(db):
    assert Client().get("/healthz").json() == {"status": "ok"}


def a_working_worker() -> None:
    """Beat's heartbeat task ran on celery@w1, and one of its pool processes is warm."""
    WorkerHeartbeat.objects.create(hostname="celery@w1", seen_at=timezone.now())
    WorkerHeartbeat.objects.create(hostname="w1:101", seen_at=timezone.now(), warm=True)


def test_ready_when_database_broker_storage_and_a_recent_worker_heartbeat_answer(db, operator):
    a_working_worker()
    response = operator.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok", "worker": "ok"},
    }


def test_anonymous_callers_get_the_readiness_status_without_the_checks(db, settings, tmp_path):
    a_working_worker()
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    (tmp_path / "a-file").write_text("x")
    settings.MEDIA_ROOT = tmp_path / "a-file" / "media"  # storage fails
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_a_wrong_token_gets_the_bare_status_not_a_refusal(db, operator):
    a_working_worker()
    for sent in ("Bearer not-the-token", f"Token {DETAILS_TOKEN}", f"Bearer {DETAILS_TOKEN}x", ""):
        response = Client(HTTP_AUTHORIZATION=sent).get("/readyz")
        assert response.status_code == 200, sent
        assert response.json() == {"status": "ready"}, sent
    assert "checks" in operator.get("/readyz").json()


def test_without_a_configured_token_no_bearer_header_shows_the_checks(db, settings):
    a_working_worker()
    settings.HEALTH_DETAILS_TOKEN = None
    assert Client(HTTP_AUTHORIZATION="Bearer ").get("/readyz").json() == {"status": "ready"}
    assert Client(HTTP_AUTHORIZATION="Bearer None").get("/readyz").json() == {"status": "ready"}


def test_a_logged_in_staff_member_sees_the_checks_and_other_users_do_not(db, submitter, admin_client):
    from tests.conftest import logged_in

    a_working_worker()
    assert admin_client.get("/readyz").json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "storage": "ok",
        "worker": "ok",
    }
    assert logged_in(submitter).get("/readyz").json() == {"status": "ready"}


def test_a_stale_heartbeat_says_the_queue_is_not_moving(db, settings, operator):
    WorkerHeartbeat.objects.create(
        hostname="celery@w1", seen_at=timezone.now() - timedelta(seconds=4 * settings.SCREENING_HEARTBEAT_SECONDS)
    )
    response = operator.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"].startswith("no worker heartbeat for")
    WorkerHeartbeat.objects.all().delete()
    assert operator.get("/readyz").json()["checks"]["worker"] == "no worker heartbeat yet"


def test_not_ready_while_no_pool_process_is_warm(db, settings, operator):
    """The main process keeps beating while its pool processes are dead or warming: that is not a worker."""
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="celery@w1", seen_at=now)
    WorkerHeartbeat.objects.create(hostname="w1:100", seen_at=now)  # the main process, or a pool process warming
    dead = now - timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS + 1)
    WorkerHeartbeat.objects.create(hostname="w1:99", seen_at=dead, warm=True)  # warm once, silent since
    response = operator.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"].startswith("no warm pool process")
    WorkerHeartbeat.objects.filter(hostname="w1:100").update(warm=True)
    assert operator.get("/readyz").status_code == 200


def test_the_worker_health_check_needs_a_warm_pool_process_of_its_own_host(db):
    from django.core.management import CommandError, call_command

    WorkerHeartbeat.objects.create(hostname="w2:7", seen_at=timezone.now(), warm=True)
    WorkerHeartbeat.objects.create(hostname="w1:8", seen_at=timezone.now())
    with pytest.raises(CommandError, match="no warm pool process on w1"):
        call_command("worker_ready", "--host", "w1")
    WorkerHeartbeat.objects.filter(hostname="w1:8").update(warm=True)
    call_command("worker_ready", "--host", "w1")


def test_a_killed_pool_process_is_no_longer_warm_at_the_main_processs_next_beat(db):
    import os
    import socket
    import subprocess

    from worker import heartbeats

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists
    host = socket.gethostname()
    WorkerHeartbeat.objects.create(hostname=f"{host}:{gone.pid}", seen_at=timezone.now(), warm=True)
    WorkerHeartbeat.objects.create(hostname=f"{host}:{os.getpid()}", seen_at=timezone.now(), warm=True)
    assert heartbeats.cool_dead_local_processes() == 1
    assert list(WorkerHeartbeat.objects.filter(warm=True).values_list("hostname", flat=True)) == [
        f"{host}:{os.getpid()}"
    ]


def test_an_unreachable_broker_is_not_ready(db, operator):
    a_working_worker()
    from kombu import Connection

    from worker.app import app

    refused = Connection("redis://127.0.0.1:1/0")  # port 1: nothing listens
    with mock.patch.object(app, "connection_for_write", return_value=refused):
        response = operator.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unavailable"


def test_unwritable_media_storage_is_not_ready(db, settings, operator, tmp_path):
    a_working_worker()
    (tmp_path / "a-file").write_text("x")
    settings.MEDIA_ROOT = tmp_path / "a-file" / "media"  # cannot be created, even by root
    response = operator.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"] == "not writable"


def test_the_heartbeat_task_records_its_worker(db):
    from worker.tasks import record_heartbeat_task

    record_heartbeat_task.apply(headers={"hostname": "celery@w2"})
    assert WorkerHeartbeat.objects.count() == 1


def test_metrics_need_the_token_or_a_staff_login_and_parse_as_prometheus(db, settings, submitter, admin_client):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.factories import batch_for, scored_study, unscored_study

    settings.METRICS_TOKEN = "s3cret-token"
    batch = batch_for(submitter)
    scored_study(batch, 0.9, population="outside")
    unscored_study(batch, "FAILED", "The JPEG file is truncated.")
    queued = unscored_study(batch, "QUEUED")
    from screening.models import Study

    Study.objects.filter(pk=queued.pk).update(queued_at=timezone.now() - timedelta(seconds=120))
    WorkerHeartbeat.objects.create(hostname="celery@w1", seen_at=timezone.now() - timedelta(seconds=12))
    from screening.models import Delivery

    result = Study.objects.get(status="DONE").results.get()
    for kind, status in (("sr", "sent"), ("sc", "pending")):
        Delivery.objects.create(result=result, destination="PACS@h:104", kind=kind, status=status)
    Delivery.objects.filter(status="pending").update(created_at=timezone.now() - timedelta(seconds=600))
    from screening.models import ReceivedInstance

    ReceivedInstance.objects.create(sop_instance_uid="1.2.3", study=queued, calling_ae="MODALITY1")

    assert Client().get("/metrics").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer wrong").get("/metrics").status_code == 401
    response = Client(HTTP_AUTHORIZATION="Bearer s3cret-token").get("/metrics")
    assert response.status_code == 200
    assert admin_client.get("/metrics").status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    assert samples[("screening_studies", (("status", "DONE"),))] == 1
    assert samples[("screening_studies", (("status", "FAILED"),))] == 1
    assert samples[("screening_oldest_waiting_seconds", (("status", "QUEUED"),))] >= 119
    assert samples[("screening_results_total", (("label", "PNEUMONIA"), ("model_version", "v-test")))] == 1
    assert samples[("screening_scored_studies_by_population", (("population", "outside"),))] == 1
    reason = (("reason", "The JPEG file is truncated."), ("status", "FAILED"))
    assert samples[("screening_unscored_studies", reason)] == 1
    assert 11 <= samples[("screening_worker_heartbeat_age_seconds", (("worker", "celery@w1"),))] < 60
    assert samples[("screening_dicom_deliveries", (("destination", "PACS@h:104"), ("status", "pending")))] == 1
    assert samples[("screening_dicom_deliveries", (("destination", "PACS@h:104"), ("status", "sent")))] == 1
    assert 599 <= samples[("screening_dicom_oldest_pending_seconds", (("destination", "PACS@h:104"),))] < 700
    assert "Oldest pending delivery to PACS@h:104" in admin_client.get("/system/").content.decode()
    assert samples[("screening_dicom_received_instances_total", (("calling_ae", "MODALITY1"),))] == 1


def test_the_system_page_is_for_staff(db, submitter, admin_client):
    from tests.conftest import logged_in

    assert logged_in(submitter).get("/system/").status_code == 302  # to the admin login
    page = admin_client.get("/system/").content.decode()
    assert "No worker has recorded a heartbeat" in page
    assert 'id="system-queue"' in page
