"""Urgent studies: priority as data at every door, and a queue of their own that workers take first."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from screening.models import Batch, Study
from screening.queue import ROUTINE_QUEUE, URGENT_QUEUE, enqueue_studies_on_commit, requeue_stuck_studies
from tests.conftest import XRAYS, named
from tests.factories import batch_for, scored_study
from tests.test_queue import make_studies
from worker.app import _transport_options, app


def sent(publish) -> list[tuple[str, list[int]]]:
    return [(call.args[1], call.args[0]) for call in publish.call_args_list]


def test_urgent_studies_go_to_the_urgent_queue_first_and_routine_ones_stay_on_the_default(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    settings.SCREENING_CHUNK_SIZE = 2
    routine = make_studies(submitter, 3)
    urgent = make_studies(submitter, 3, priority=Study.Priority.URGENT)
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in routine + urgent])
    assert sent(publish) == [
        (URGENT_QUEUE, [urgent[0].pk, urgent[1].pk]),
        (URGENT_QUEUE, [urgent[2].pk]),
        (ROUTINE_QUEUE, [routine[0].pk, routine[1].pk]),
        (ROUTINE_QUEUE, [routine[2].pk]),
    ]


def test_the_sweep_re_sends_a_lost_urgent_study_to_the_urgent_queue(
    submitter, publish, django_capture_on_commit_callbacks
):
    [lost] = make_studies(submitter, 1, priority=Study.Priority.URGENT)
    Study.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=5))  # publish failed
    with django_capture_on_commit_callbacks(execute=True):
        requeue_stuck_studies(broker_replaced=False)
    assert sent(publish) == [(URGENT_QUEUE, [lost.pk])]


def test_workers_consume_the_urgent_queue_first():
    assert [queue.name for queue in app.conf.task_queues] == [URGENT_QUEUE, ROUTINE_QUEUE]
    assert app.conf.task_default_queue == ROUTINE_QUEUE
    assert _transport_options("redis://127.0.0.1:6379/0")["queue_order_strategy"] == "priority"


@pytest.mark.parametrize(("given", "stored"), [(None, "routine"), ("routine", "routine"), ("urgent", "urgent")])
def test_the_api_takes_a_priority_and_shows_it(api, publish, given, stored):
    data = {"file": named("a.jpeg", XRAYS[0].read_bytes())}
    if given:
        data["priority"] = given
    response = api.post("/api/v1/studies", data)
    assert response.status_code == 202, response.content
    study = Study.objects.get(pk=response.json()["studies"][0]["id"])
    assert study.priority == stored
    assert api.get(f"/api/v1/studies/{study.pk}").json()["priority"] == stored


def test_an_unknown_priority_is_refused_and_nothing_is_stored(api, publish):
    response = api.post("/api/v1/batches", {"files": [named("a.jpeg", XRAYS[0].read_bytes())], "priority": "stat"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_priority"
    assert "urgent" in response.json()["error"]
    assert not Study.objects.exists()


def test_the_command_line_and_the_web_form_take_a_priority(submitter, client, publish, tmp_path):
    (tmp_path / "a.jpeg").write_bytes(XRAYS[0].read_bytes())
    call_command(
        "submit_folder", str(tmp_path), "--user", submitter.username, "--priority", "urgent", stdout=io.StringIO()
    )
    assert list(Study.objects.values_list("priority", flat=True)) == ["urgent"]

    client.force_login(submitter)
    response = client.post(
        "/batches/new/", {"files": [named("b.jpeg", XRAYS[1].read_bytes())], "priority": "urgent", "population": ""}
    )
    assert response.status_code in (200, 302)
    assert Study.objects.filter(original_name="b.jpeg", priority="urgent").exists()


def test_the_worklist_marks_urgent_studies(radiologist, submitter, client):
    batch = batch_for(submitter)
    scored_study(batch, 0.9, priority=Study.Priority.URGENT)
    scored_study(batch, 0.8)
    client.force_login(radiologist)
    page = client.get("/worklist/").content.decode()
    assert page.count('class="badge urgent"') == 1


def test_a_caller_named_in_dicom_urgent_callers_sends_urgent_studies(settings, db):
    from screening.dicom.nodes import parse_callers
    from screening.dicom.receiver import Inbox

    settings.DICOM_URGENT_CALLERS = parse_callers(["ED_CR@10.0.0.7"])
    assert Inbox(calling_ae="ED_CR", peer="10.0.0.7").priority == Study.Priority.URGENT
    assert Inbox(calling_ae="ED_CR", peer="10.0.0.8").priority == Study.Priority.ROUTINE
    assert Inbox(calling_ae="WARD_CR", peer="10.0.0.7").priority == Study.Priority.ROUTINE
    assert Inbox(calling_ae="", peer="10.0.0.7", source=Batch.Source.DICOMWEB).priority == Study.Priority.ROUTINE
