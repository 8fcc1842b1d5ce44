"""A fresh test database and an empty broker for one benchmark run, removed afterwards."""

from __future__ import annotations

from contextlib import contextmanager

from django.conf import settings
from django.db import connection
from django.test.utils import setup_test_environment


def _flush_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@contextmanager
def fresh_services():
    """Create the test database (PostgreSQL with the test settings) and empty Redis; undo both on exit."""
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    _flush_broker()
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        _flush_broker()
