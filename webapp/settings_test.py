"""Test settings: the main settings, pointed at the real PostgreSQL and Redis.

The suite runs against the services production uses. Where they do not answer
it falls back to SQLite and Celery's SQL broker with a loud warning, except in
CI (``CI=true``), where a missing service is an error rather than a quietly
weaker test run.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from urllib.parse import urlsplit

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production")

from webapp.database import postgres_options  # noqa: E402
from webapp.env import env_bool, env_str  # noqa: E402
from webapp.settings import *  # noqa: E402,F403

TEST_DATABASE_URL = env_str("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/screening")
TEST_BROKER_URL = env_str("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


_missing = [
    name
    for name, url, port in (("PostgreSQL", TEST_DATABASE_URL, 5432), ("Redis", TEST_BROKER_URL, 6379))
    if not _answers(url, port)
]
if _missing and env_bool("CI", False):
    raise RuntimeError(f"CI=true but {', '.join(_missing)} did not answer; refusing to fall back to embedded defaults")
if _missing:
    print(f"WARNING: {', '.join(_missing)} not reachable; tests fall back to embedded defaults", file=sys.stderr)

USING_REAL_SERVICES = not _missing
# The production bounds on waiting (webapp.database), with statements given longer than the web's: creating and
# flushing the test database on a machine busy with other runs must not be cancelled. Tests of the timeout set a
# short one themselves (webapp.database.use_statement_timeout).
TEST_STATEMENT_TIMEOUT = 120
if USING_REAL_SERVICES:
    DATABASES = {"default": dj_database_url.parse(TEST_DATABASE_URL)}  # noqa: F405
    DATABASES["default"]["OPTIONS"] = postgres_options(
        connect_timeout=DATABASE_CONNECT_TIMEOUT,  # noqa: F405
        statement_timeout=TEST_STATEMENT_TIMEOUT,
    )
    # One test database per run (Django prefixes ``test_``): two suites on one machine, say a developer's and a
    # fresh clone's, used to drop each other's. A worker a test starts is handed the name (``harness``).
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
    CELERY_BROKER_URL = TEST_BROKER_URL
else:
    DATABASES = {"default": dj_database_url.parse(f"sqlite:///{tempfile.gettempdir()}/screening-test.sqlite3")}  # noqa: F405
    CELERY_BROKER_URL = f"sqla+sqlite:///{tempfile.gettempdir()}/screening-test-broker.sqlite3"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in production
# A worker process started by a test is handed the test's MEDIA_ROOT.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or tempfile.mkdtemp(prefix="screening-test-media-"))  # noqa: F405
STATIC_ROOT = Path(tempfile.mkdtemp(prefix="screening-test-static-"))  # noqa: F405
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
