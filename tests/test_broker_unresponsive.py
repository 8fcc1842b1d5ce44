"""A broker that accepts connections and never answers: a hung Redis, a failover, a firewall dropping the flow.

Redis refusing connections fails fast; this one does not, and without a
socket timeout every command waits for ever. The peer here is a real TCP
listener that never writes a byte, and the Celery app is built from the
settings as ``worker.app`` builds it.
"""

import threading

import pytest
from celery import Celery
from django.db import connections

from screening.models import Study
from screening.queue import enqueue_studies_on_commit
from tests.silent_peer import silent_listener
from tests.test_queue import make_studies
from worker.app import _reliability_settings

GIVE_UP_AFTER_SECONDS = 60  # only so that a hang fails the test instead of the run


@pytest.fixture
def silent_broker():
    """A listening socket that accepts every connection and never answers; yields its redis:// URL."""
    with silent_listener() as (port, accepted):
        yield f"redis://127.0.0.1:{port}/0", accepted


@pytest.fixture
def app_on_silent_broker(silent_broker, settings, monkeypatch):
    url, accepted = silent_broker
    settings.CELERY_BROKER_URL = url
    settings.CELERY_BROKER_SOCKET_TIMEOUT = 0.5
    silent = Celery("screening-silent-broker", set_as_current=False)  # the rest of the suite keeps worker.app
    silent.config_from_object("django.conf:settings", namespace="CELERY")
    silent.add_defaults(_reliability_settings)
    monkeypatch.setattr("screening.queue.current_app", silent)
    yield silent, accepted
    silent.close()


def in_thread(call):
    """Run ``call`` on a thread; the outcome, or a failure of the test when it is still waiting after a minute."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc
        finally:
            connections.close_all()  # this thread's own; left open, they would keep the test database in use

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GIVE_UP_AFTER_SECONDS)
    assert not thread.is_alive(), "still waiting on a broker that never answers"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.django_db(transaction=True)
def test_an_upload_does_not_wait_for_ever_on_a_broker_that_never_answers(submitter, app_on_silent_broker, settings):
    silent, accepted = app_on_silent_broker
    settings.SCREENING_CHUNK_SIZE = 2
    studies = make_studies(submitter, 6)

    in_thread(lambda: enqueue_studies_on_commit([s.pk for s in studies]))  # no transaction: publishes at once

    assert accepted, "the publish never reached the silent broker"
    # Nothing was published, so nothing may look queued: the sweep re-sends RECEIVED studies.
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.RECEIVED}


@pytest.mark.django_db
def test_readiness_reports_a_broker_that_never_answers(client, app_on_silent_broker, monkeypatch, settings):
    silent, accepted = app_on_silent_broker
    monkeypatch.setattr("celery.current_app", silent)
    settings.HEALTH_DETAILS_TOKEN = "health-details"  # an operator's monitor: told which check failed

    response = in_thread(lambda: client.get("/readyz", HTTP_AUTHORIZATION="Bearer health-details"))

    assert accepted, "the check never reached the silent broker"
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unavailable"
