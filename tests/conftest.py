"""Shared fixtures: personas for each role, API clients, real fixture images."""

from __future__ import annotations

import io
import os
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from screening import roles
from screening.api import tokens

FIXTURES = Path(__file__).parent / "fixtures"
XRAYS = sorted((FIXTURES / "xray").rglob("*.jpeg"))
ORIGINALS = sorted((FIXTURES / "originals").glob("*.jpeg"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Fixtures that start a process outside pytest's: a test using one is end-to-end.
E2E_FIXTURES = {"browser"}


def pytest_collection_modifyitems(items) -> None:
    """``e2e`` on every test that starts a browser or a worker (``make test-fast`` leaves them out).

    Modules whose every test starts a process (a worker, nginx, Orthanc, DCMTK)
    say so in their ``pytestmark``; single tests that run a process carry the
    mark themselves.
    """
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("worker"):
            item.add_marker(pytest.mark.e2e)


LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def make_user(username: str, role: str | None = None, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def submitter(db):
    return make_user("sam", roles.SUBMITTER)


@pytest.fixture
def other_submitter(db):
    return make_user("olga", roles.SUBMITTER)


@pytest.fixture
def radiologist(db):
    return make_user("rita", roles.RADIOLOGIST)


@pytest.fixture
def auditor(db):
    return make_user("abe", roles.AUDITOR, is_staff=True)


@pytest.fixture
def outsider(db):
    """Logged in, but in no group: must be refused everything."""
    return make_user("otto")


def token_client(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(user)}")


def logged_in(user) -> Client:
    """A browser session of ``user``, without going through the login form."""
    client = Client()
    client.force_login(user)
    return client


def named(name: str, data: bytes) -> io.BytesIO:
    """In-memory file content with a name, as the test client uploads it."""
    handle = io.BytesIO(data)
    handle.name = name
    return handle


@pytest.fixture
def api(submitter) -> Client:
    return token_client(submitter)


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def xray_bytes() -> bytes:
    return XRAYS[0].read_bytes()


@pytest.fixture
def publish():
    """Scoring tasks are recorded, not sent: each call's ``args[0]`` is one chunk of study ids.

    Tests that check the web, the API or scoring rather than the queue use it
    so that nothing reaches a broker.
    """
    with mock.patch("screening.queue.send_score_task") as publish:
        yield publish


@pytest.fixture
def publish_deliveries():
    """DICOM delivery tasks are recorded, not sent: each call's ``args[0]`` is one delivery id."""
    with mock.patch("screening.queue.send_delivery_task") as publish:
        yield publish


# The served model, gate and population check, loaded once per test run (a load costs seconds) and shared by
# every test that scores with them; the same copies a worker process would hold (``worker.loaded_models``).
@pytest.fixture(scope="session")
def served_explainer():
    from worker.loaded_models import get_screener

    return get_screener()


@pytest.fixture(scope="session")
def served_gate():
    from worker.loaded_models import get_gate

    return get_gate()


@pytest.fixture(scope="session")
def served_population_check():
    from worker.loaded_models import get_population_check

    return get_population_check()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright, one per test module (browser tests skip without it)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def silent_database(db):
    """Points new connections (another thread's) at a listener that accepts and never answers; yields those accepted."""
    from django.conf import settings

    from tests.silent_peer import silent_listener

    with silent_listener() as (port, accepted):
        database = settings.DATABASES["default"]
        before = database["HOST"], database["PORT"]
        database["HOST"], database["PORT"] = "127.0.0.1", port
        yield accepted
        database["HOST"], database["PORT"] = before
