"""A database that hangs costs a request seconds and answers 503 with Retry-After, never a web worker.

Two hangs, both against the real PostgreSQL and neither touching the shared
server: a table another connection keeps locked (the statement waits until
``statement_timeout`` cancels it), and a peer that accepts the connection and
never answers (``connect_timeout``). Each request runs on a thread that the
test gives up on after a minute, so that a missing bound fails the test
instead of hanging the run; the bound itself is the setting.
"""

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from screening.models import Batch
from tests.conftest import logged_in, token_client
from tests.test_broker_unresponsive import in_thread
from webapp.database import use_statement_timeout
from worker.signals import use_the_workers_statement_timeout

pytestmark = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="connection and statement timeouts are PostgreSQL's; SQLite has a busy timeout only",
)


@pytest.fixture
def statement_options():
    """Puts back the statement timeout the test settings give, whatever the test set meanwhile."""
    options = settings.DATABASES["default"]["OPTIONS"]
    before = options["options"]
    yield options
    options["options"] = before
    connection.close()  # reconnects with the test settings' timeout


@pytest.fixture
def one_second_statements(transactional_db, statement_options):
    use_statement_timeout(1)


@pytest.fixture
def locked_batch(submitter, one_second_statements):
    """A batch whose table another session holds an ACCESS EXCLUSIVE lock on until the test ends."""
    batch = Batch.objects.create(submitted_by=submitter, source=Batch.Source.API)
    locker = connection.copy()
    locker.set_autocommit(False)
    with locker.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {Batch._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    yield batch
    locker.rollback()
    locker.close()


def answering_errors(client: Client) -> Client:
    client.raise_request_exception = False  # a 503 is the answer under test, not an exception
    return client


def test_a_query_on_a_locked_table_is_cancelled_and_the_api_answers_a_json_503(submitter, locked_batch):
    client = answering_errors(token_client(submitter))

    response = in_thread(lambda: client.get(f"/api/v1/batches/{locked_batch.pk}"))

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert "database is unavailable" in body["error"]
    assert response["Retry-After"] == str(body["retry_after"]) == "30"


def test_a_page_whose_query_times_out_is_a_plain_503_page_that_says_to_try_again(submitter, locked_batch):
    client = answering_errors(logged_in(submitter))

    response = in_thread(lambda: client.get("/batches/"))

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "30"
    assert b"database is unavailable" in response.content


def test_a_database_that_accepts_and_never_answers_is_a_json_503_within_the_connect_timeout(silent_database):
    client = answering_errors(Client(HTTP_AUTHORIZATION="Token not-a-real-token"))

    response = in_thread(lambda: client.get("/api/v1/batches/1"))

    assert silent_database, "the request never reached the silent database"
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json()["code"] == "database_unavailable"


def test_readiness_reports_a_database_that_never_answers(silent_database):
    operator = Client(HTTP_AUTHORIZATION="Bearer health-details")  # a monitor told which check failed

    with override_settings(HEALTH_DETAILS_TOKEN="health-details"):
        response = in_thread(lambda: operator.get("/readyz"))

    assert silent_database, "the check never reached the silent database"
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"


def test_liveness_does_not_wait_for_a_database_that_never_answers(silent_database):
    response = in_thread(lambda: Client().get("/healthz"))

    assert response.status_code == 200
    assert not silent_database


@pytest.mark.django_db
def test_connections_carry_the_timeouts_and_tcp_bounds_of_the_settings():
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
        (statement_timeout_ms,) = cursor.fetchone()
    used = connection.connection.info.get_parameters()

    assert int(statement_timeout_ms) == settings.TEST_STATEMENT_TIMEOUT * 1000
    assert used["connect_timeout"] == str(settings.DATABASE_CONNECT_TIMEOUT)
    assert used["keepalives"] == "1"
    assert int(used["keepalives_idle"]) > 0
    assert int(used["tcp_user_timeout"]) > 0


def test_the_worker_gives_its_connections_the_worker_statement_timeout(transactional_db, statement_options):
    use_the_workers_statement_timeout()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
        (statement_timeout_ms,) = cursor.fetchone()

    assert int(statement_timeout_ms) == settings.DATABASE_WORKER_STATEMENT_TIMEOUT * 1000
    assert settings.DATABASE_WORKER_STATEMENT_TIMEOUT != settings.TEST_STATEMENT_TIMEOUT  # else this proves nothing
