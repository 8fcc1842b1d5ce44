"""Recovery in seconds, not minutes: claims name their process, dead processes are noticed, an empty broker is refilled.

Issue 12 measured 201 s to recover from a killed worker (the 150-s RUNNING
timeout), 6 minutes after a Redis restart (the 300-s QUEUED timeout), and
database retries used up within 9 s of a 20-s outage.
"""

import os
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from screening import liveness
from screening.models import ServiceState, Study, WorkerHeartbeat
from screening.queue import requeue_stuck_studies
from tests.test_broker_unresponsive import in_thread
from tests.test_queue import make_studies
from worker import heartbeats
from worker.scoring import claim


def test_a_claim_names_its_process_and_the_process_takes_back_its_own(submitter):
    ids = [s.pk for s in make_studies(submitter, 3, status=Study.Status.QUEUED)]
    assert [s.pk for s in claim(ids, "host-a:11")] == ids
    assert set(Study.objects.values_list("claimed_by", flat=True)) == {"host-a:11"}
    assert claim(ids, "host-b:22") == []  # another process never takes a live claim
    again = claim(ids, "host-a:11")  # a retry in the same process, after its hand-back failed
    assert [s.pk for s in again] == ids
    assert set(Study.objects.values_list("attempts", flat=True)) == {2}


def test_the_sweep_hands_back_a_dead_processs_claim_within_seconds(submitter, publish, settings):
    now = timezone.now()
    dead, alive = make_studies(submitter, 2, status=Study.Status.QUEUED)
    claim([dead.pk], "host-a:11")
    claim([alive.pk], "host-b:22")
    WorkerHeartbeat.objects.create(hostname="host-a:11", seen_at=now - timedelta(seconds=60))
    WorkerHeartbeat.objects.create(hostname="host-b:22", seen_at=now)
    early = now + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS - 1)
    assert requeue_stuck_studies(early, broker_replaced=False)["requeued"] == 0  # a fresh claim gets its grace
    later = now + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS + 1)
    WorkerHeartbeat.objects.filter(hostname="host-b:22").update(seen_at=later)
    counts = requeue_stuck_studies(later, broker_replaced=False)
    assert counts["requeued"] == 1
    assert Study.objects.get(pk=dead.pk).status == Study.Status.QUEUED
    assert Study.objects.get(pk=alive.pk).status == Study.Status.RUNNING
    assert settings.SCREENING_DEAD_WORKER_SECONDS + settings.SCREENING_SWEEP_INTERVAL_SECONDS <= 30


def test_a_chunk_reserved_by_a_process_that_died_before_claiming_it_is_sent_again_within_seconds(
    submitter, publish, settings, django_capture_on_commit_callbacks
):
    """A worker's main process takes a message for its pool and is killed before a pool process claims the studies:
    the message waits out Redis's visibility timeout, but the sweep sees who held it and re-sends it."""
    from types import SimpleNamespace

    from screening.queue import SCORE_STUDIES_TASK
    from worker.signals import note_the_reserved_chunk

    now = timezone.now()
    held_by_dead, held_by_alive = make_studies(submitter, 2, status=Study.Status.QUEUED, queued_at=now)
    with mock.patch.object(liveness, "process_name", return_value="host-a:1"):
        note_the_reserved_chunk(request=SimpleNamespace(name=SCORE_STUDIES_TASK, args=[[held_by_dead.pk]]))
    with mock.patch.object(liveness, "process_name", return_value="host-b:2"):
        note_the_reserved_chunk(request=SimpleNamespace(name=SCORE_STUDIES_TASK, args=[[held_by_alive.pk]]))
        note_the_reserved_chunk(request=SimpleNamespace(name="some.other.task", args=[[held_by_dead.pk]]))
    assert Study.objects.get(pk=held_by_dead.pk).claimed_by == "host-a:1"
    assert Study.objects.get(pk=held_by_alive.pk).claimed_by == "host-b:2"

    later = now + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS + 1)
    WorkerHeartbeat.objects.create(hostname="host-a:1", seen_at=now - timedelta(seconds=60))
    WorkerHeartbeat.objects.create(hostname="host-b:2", seen_at=later)
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stuck_studies(later, broker_replaced=False)["requeued"] == 1
    assert [call.args[0] for call in publish.call_args_list] == [[held_by_dead.pk]]
    resent = Study.objects.get(pk=held_by_dead.pk)
    assert resent.status == Study.Status.QUEUED
    assert resent.claimed_by == ""
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stuck_studies(later + timedelta(seconds=10), broker_replaced=False)["requeued"] == 0


def test_an_empty_new_broker_gets_every_queued_study_again_at_once(
    submitter, publish, django_capture_on_commit_callbacks
):
    fresh = make_studies(submitter, 3, status=Study.Status.QUEUED, queued_at=timezone.now())
    assert requeue_stuck_studies(broker_replaced=False)["requeued"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stuck_studies(broker_replaced=True)["requeued"] == 3
    assert sorted(pk for call in publish.call_args_list for pk in call.args[0]) == sorted(s.pk for s in fresh)


def test_a_new_redis_run_is_recognised_once(db):
    with mock.patch.object(liveness, "_broker_run_id", return_value="run-1"):
        assert liveness.broker_was_replaced() is False  # first sight: nothing to compare with
        assert liveness.broker_was_replaced() is False
    with mock.patch.object(liveness, "_broker_run_id", return_value="run-2"):
        assert liveness.broker_was_replaced() is True
        assert liveness.broker_was_replaced() is False
    assert ServiceState.objects.get(key=liveness.BROKER_IDENTITY_KEY).value == "run-2"


def test_the_real_redis_has_a_run_id(db):
    assert liveness._broker_run_id()


def test_each_worker_process_writes_a_heartbeat_until_stopped(transactional_db, settings):
    settings.SCREENING_PROCESS_HEARTBEAT_SECONDS = 1
    stop = threading.Event()
    thread = heartbeats.start_heartbeat_thread(stop)
    deadline = time.monotonic() + 10
    while not WorkerHeartbeat.objects.filter(hostname=liveness.process_name()).exists():
        assert time.monotonic() < deadline, "no heartbeat written"
        time.sleep(0.1)
    first = WorkerHeartbeat.objects.get(hostname=liveness.process_name()).seen_at
    time.sleep(1.5)
    assert WorkerHeartbeat.objects.get(hostname=liveness.process_name()).seen_at > first
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_database_retries_outlast_a_two_minute_outage():
    from worker.tasks import score_studies_task as task

    assert task.retry_jitter is False
    assert task.max_retries >= 10
    delays = [min(task.retry_backoff * 2**n, task.retry_backoff_max) for n in range(task.max_retries)]
    assert sum(delays) > 180


def test_a_study_put_back_in_the_queue_is_held_by_no_process(submitter, publish, settings):
    """Every way into QUEUED clears the holder: a rerun of a study a long-gone process had scored is not taken
    for a message that process reserved, and is not sent again by the next sweep."""
    from screening.rerun import rerun_with_current_model

    now = timezone.now()
    (study,) = make_studies(submitter, 1, status=Study.Status.DONE, claimed_by="host-a:11", finished_at=now)
    WorkerHeartbeat.objects.create(hostname="host-a:11", seen_at=now - timedelta(days=1))
    assert rerun_with_current_model(Study.objects.filter(pk=study.pk), submitter).queued == [study.pk]
    study.refresh_from_db()
    assert (study.status, study.claimed_by) == (Study.Status.QUEUED, "")
    later = timezone.now() + timedelta(seconds=settings.SCREENING_DEAD_WORKER_SECONDS + 1)
    assert requeue_stuck_studies(later, broker_replaced=False)["requeued"] == 0


def test_a_retry_in_another_pool_process_takes_back_what_the_earlier_attempt_claimed(submitter):
    """The database went away mid-chunk in process a, which could not hand its claims back; the retry runs in b."""
    from worker.scoring import claim

    studies = make_studies(submitter, 2, status=Study.Status.RUNNING, claimed_by="host:a", attempts=1)
    ids = [s.pk for s in studies]

    assert claim(ids, "host:b") == []  # held by a live process: not b's to take
    assert [s.pk for s in claim(ids, "host:b", reclaim_from=["host:a"])] == ids
    assert set(Study.objects.filter(pk__in=ids).values_list("claimed_by", "attempts")) == {("host:b", 2)}


def test_a_redelivered_chunk_takes_over_what_a_killed_pool_process_of_this_host_held(submitter, settings):
    """The kernel says the holder is gone: its studies are taken at once, not after the lease lapses."""
    import socket
    import subprocess

    from worker.scoring import claim

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists
    host = socket.gethostname()
    dead, alive = f"{host}:{gone.pid}", f"{host}:{os.getpid()}"
    taken = make_studies(submitter, 2, status=Study.Status.RUNNING, claimed_by=dead, attempts=1)
    kept = make_studies(submitter, 1, status=Study.Status.RUNNING, claimed_by=alive, attempts=1)
    elsewhere = make_studies(submitter, 1, status=Study.Status.RUNNING, claimed_by="other-host:1", attempts=1)
    worn = make_studies(
        submitter, 1, status=Study.Status.RUNNING, claimed_by=dead, attempts=settings.SCREENING_MAX_ATTEMPTS
    )
    ids = [s.pk for s in taken + kept + elsewhere + worn]

    assert sorted(s.pk for s in claim(ids, "host:new")) == sorted(s.pk for s in taken)
    assert set(Study.objects.filter(pk__in=[s.pk for s in taken]).values_list("claimed_by", "attempts")) == {
        ("host:new", 2)
    }
    # A live holder, another host's (only its lease can tell) and a study that killed its process too often stay.
    assert Study.objects.get(pk=kept[0].pk).claimed_by == alive
    assert Study.objects.get(pk=elsewhere[0].pk).claimed_by == "other-host:1"
    assert Study.objects.get(pk=worn[0].pk).claimed_by == dead


def test_the_scoring_retry_names_every_process_that_ran_an_attempt(silent_database, monkeypatch):
    """A chunk whose database stops answering is retried with this process named, whichever process runs the retry."""
    from celery.exceptions import Retry

    from worker import tasks

    retried = []
    monkeypatch.setattr(tasks.score_studies_task, "retry", lambda **kw: retried.append(kw) or Retry())

    def attempt():  # in a thread of its own: a new connection, to the silent database
        with pytest.raises(Retry):
            tasks.score_studies_task.run([1, 2], reclaim_from=["host:earlier"])

    in_thread(attempt)
    assert silent_database, "the task never reached the silent database"
    assert retried[0]["kwargs"] == {"reclaim_from": sorted(["host:earlier", liveness.process_name()])}
    assert retried[0]["countdown"] == 2  # the first step of the backoff autoretry_for would use
