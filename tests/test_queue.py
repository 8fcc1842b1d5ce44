"""Enqueueing after commit, chunking, and the sweep that recovers lost studies."""

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from screening import liveness
from screening.models import Batch, Study
from screening.queue import ROUTINE_QUEUE, chunked, enqueue_studies_on_commit, release_unfinished, requeue_stuck_studies


def make_studies(user, n, status=Study.Status.RECEIVED, **fields):
    batch = Batch.objects.create(submitted_by=user, source=Batch.Source.API)
    return [
        Study.objects.create(
            batch=batch,
            file=f"studies/x/{i}.jpg",
            original_name=f"{i}.jpg",
            sha256=f"{i:064x}",
            size_bytes=10,
            format="jpeg",
            status=status,
            **fields,
        )
        for i in range(n)
    ]


def test_chunked_splits_in_order():
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_nothing_is_sent_before_commit_and_all_is_sent_after(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    settings.SCREENING_CHUNK_SIZE = 16
    studies = make_studies(submitter, 40)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue_studies_on_commit([s.pk for s in studies])
        assert publish.call_count == 0
    assert len(callbacks) == 1
    sent = [call.args[0] for call in publish.call_args_list]
    assert [len(chunk) for chunk in sent] == [16, 16, 8]
    assert sorted(i for chunk in sent for i in chunk) == sorted(s.pk for s in studies)
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.QUEUED}


def test_task_arguments_survive_a_json_round_trip(submitter, publish, django_capture_on_commit_callbacks):
    studies = make_studies(submitter, 3)
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    chunk, queue = publish.call_args.args
    args = [chunk]  # what send_score_task hands Celery as the task's args
    assert json.loads(json.dumps(args)) == args == [[s.pk for s in studies]]
    assert queue == ROUTINE_QUEUE


def test_a_rolled_back_transaction_sends_nothing(submitter, publish, django_capture_on_commit_callbacks):
    studies = make_studies(submitter, 2)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        enqueue_studies_on_commit([s.pk for s in studies])
        transaction.set_rollback(True)
    publish.assert_not_called()


def test_a_broker_outage_leaves_studies_received_for_the_sweep(submitter, publish, django_capture_on_commit_callbacks):
    publish.side_effect = ConnectionError("broker down")
    studies = make_studies(submitter, 2)
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.RECEIVED}


def test_publishing_stops_at_the_first_refused_chunk_and_leaves_the_rest_for_the_sweep(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    """One refusal means the broker is down: trying every chunk would make the upload wait out each one's retries."""
    settings.SCREENING_CHUNK_SIZE = 2
    publish.side_effect = [None, ConnectionError("broker down"), None, None]
    studies = make_studies(submitter, 7)
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    assert publish.call_count == 2
    status = dict(Study.objects.values_list("pk", "status"))
    assert [status[s.pk] for s in studies] == [Study.Status.QUEUED] * 2 + [Study.Status.RECEIVED] * 5


def test_every_study_is_queued_before_the_first_message_goes_out(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    settings.SCREENING_CHUNK_SIZE = 2
    studies = make_studies(submitter, 5)
    seen = []
    publish.side_effect = lambda chunk, queue: seen.append(set(Study.objects.values_list("status", flat=True)))
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    assert seen == [{Study.Status.QUEUED}] * 3


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs."""


def test_studies_name_their_publisher_until_every_message_is_out(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    settings.SCREENING_CHUNK_SIZE = 2
    studies = make_studies(submitter, 3)
    seen = []
    publish.side_effect = lambda chunk, queue: seen.append(set(Study.objects.values_list("claimed_by", flat=True)))
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    assert seen == [{liveness.process_name()}] * 2
    assert set(Study.objects.values_list("status", "claimed_by")) == {(Study.Status.QUEUED, "")}


def test_a_publisher_killed_after_its_commit_leaves_studies_the_sweep_resends_once_it_is_silent(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    studies = make_studies(submitter, 2)
    publish.side_effect = Killed
    with pytest.raises(Killed), django_capture_on_commit_callbacks(execute=True):
        enqueue_studies_on_commit([s.pk for s in studies])
    publish.reset_mock(side_effect=True)
    queued_at = Study.objects.get(pk=studies[0].pk).queued_at

    soon = queued_at + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS - 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stuck_studies(now=soon, broker_replaced=False)["requeued"] == 0

    later = queued_at + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stuck_studies(now=later, broker_replaced=False)["requeued"] == 2
    assert sorted(i for call in publish.call_args_list for i in call.args[0]) == sorted(s.pk for s in studies)


def test_the_sweep_requeues_lost_studies_and_leaves_fresh_ones(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    received = make_studies(submitter, 1)[0]
    Study.objects.filter(pk=received.pk).update(created_at=long_ago)
    queued = make_studies(submitter, 1, Study.Status.QUEUED, queued_at=long_ago)[0]
    running = make_studies(submitter, 1, Study.Status.RUNNING, started_at=long_ago, attempts=1)[0]
    fresh = make_studies(submitter, 1, Study.Status.RUNNING, started_at=now, attempts=1)[0]
    fresh_queued = make_studies(submitter, 1, Study.Status.QUEUED, queued_at=now)[0]

    with django_capture_on_commit_callbacks(execute=True):
        counts = requeue_stuck_studies(now=now)

    assert counts == {"requeued": 3, "failed": 0}
    sent = sorted(i for call in publish.call_args_list for i in call.args[0])
    assert sent == sorted([received.pk, queued.pk, running.pk])
    fresh.refresh_from_db()
    fresh_queued.refresh_from_db()
    assert fresh.status == Study.Status.RUNNING
    assert fresh_queued.status == Study.Status.QUEUED


def test_the_sweep_fails_a_study_lost_too_often(submitter, publish, settings):
    settings.SCREENING_MAX_ATTEMPTS = 3
    long_ago = timezone.now() - timedelta(hours=1)
    study = make_studies(submitter, 1, Study.Status.RUNNING, started_at=long_ago, attempts=3)[0]
    assert requeue_stuck_studies()["failed"] == 1
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert "interrupted 3 times" in study.status_message


def test_release_unfinished_requeues_or_fails_by_attempts(
    submitter, publish, django_capture_on_commit_callbacks, settings
):
    settings.SCREENING_MAX_ATTEMPTS = 2
    again = make_studies(submitter, 1, Study.Status.RUNNING, attempts=1)[0]
    spent = make_studies(submitter, 1, Study.Status.RUNNING, attempts=2)[0]
    with django_capture_on_commit_callbacks(execute=True):
        release_unfinished([again.pk, spent.pk], "Took too long.")
    again.refresh_from_db()
    spent.refresh_from_db()
    assert again.status == Study.Status.QUEUED
    assert spent.status == Study.Status.FAILED
    assert spent.status_message == "Took too long."
    assert publish.call_args.args == ([again.pk], ROUTINE_QUEUE)


@pytest.mark.django_db(transaction=True)
def test_a_claim_waits_for_a_briefly_locked_row_instead_of_skipping_it(submitter):
    """The publisher's status update holds a row lock for a moment; a worker's claim must not skip that study."""
    import threading
    import time

    from django.conf import settings as django_settings
    from django.db import connection

    from worker.scoring import claim

    if connection.vendor != "postgresql":
        pytest.skip("row locks are a PostgreSQL matter; SQLite serialises writers")
    assert django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    study = make_studies(submitter, 1, Study.Status.QUEUED)[0]
    locked = threading.Event()

    def hold_the_row():
        with transaction.atomic():
            Study.objects.select_for_update().filter(pk=study.pk).update(queued_at=timezone.now())
            locked.set()
            time.sleep(0.5)
        connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    locked.wait(5)
    claimed = claim([study.pk])
    holder.join()
    assert [s.pk for s in claimed] == [study.pk]
