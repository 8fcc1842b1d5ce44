"""How long a process may wait on PostgreSQL: bounded, so that a database that hangs costs a request seconds.

Without bounds, a request waits on a hung server until gunicorn kills the web
worker that runs it, and with every worker waiting even ``/healthz`` goes
unanswered. These are libpq connection parameters, so they hold for every
query Django sends, health checks and commits included:

- ``connect_timeout``: a server that accepts the connection but never answers
  its start-up (libpq counts whole seconds, and at least 2);
- ``statement_timeout``, sent as a start-up option and enforced by the server:
  a statement that runs, or waits for a lock, longer than this is cancelled
  (``QueryCanceled``, an ``OperationalError``), and its transaction rolls back;
- TCP keepalives and ``tcp_user_timeout``: a connection whose server host is
  gone (crashed, partitioned away, failed over to another address) fails while
  we wait for its answer, instead of when the kernel gives up, minutes later.

A PostgreSQL that is frozen while its host runs on (the process stopped, or
stuck in I/O) still has its kernel acknowledge our data and keepalives, and
never cancels anything itself: a query sent on a connection opened before it
froze is not bounded by any of these (a new connection is, by
``connect_timeout``). ``make run``'s SQLite has no network to wait on; its busy
timeout bounds lock waits instead. A connection pooler that refuses or drops
start-up ``options`` (PgBouncer) loses the statement timeout: set it on the
database role there (``ALTER ROLE … SET statement_timeout``).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connections

POSTGRESQL = "django.db.backends.postgresql"
# A dead host is noticed after about KEEPALIVE_IDLE_SECONDS of silence plus UNACKNOWLEDGED_SECONDS.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3
UNACKNOWLEDGED_SECONDS = 10

_STATEMENT_TIMEOUT = re.compile(r"\s*-c\s*statement_timeout=\S+")


def postgres_options(*, connect_timeout: int, statement_timeout: int) -> dict:
    """Connection parameters (``DATABASES[...]["OPTIONS"]``) that bound every wait; 0 s: statements never time out."""
    return {
        "connect_timeout": connect_timeout,
        "options": _with_statement_timeout("", statement_timeout),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": UNACKNOWLEDGED_SECONDS * 1000,
    }


def use_statement_timeout(seconds: int, alias: str = "default") -> None:
    """Give connections this process opens from now on a ``statement_timeout`` of ``seconds`` (0: none).

    For a process whose work differs from the web's (the worker's claims wait
    for row locks that other workers hold), set where that process starts,
    before it opens connections on other threads: this thread's open
    connection is closed so that its next query reconnects with the new value,
    other threads' keep theirs until they reconnect. Only PostgreSQL has it.
    """
    database = settings.DATABASES[alias]
    if database["ENGINE"] != POSTGRESQL:
        return
    options = database.setdefault("OPTIONS", {})
    options["options"] = _with_statement_timeout(options.get("options", ""), seconds)
    connections[alias].close()


def _with_statement_timeout(options: str, seconds: int) -> str:
    """libpq's ``options`` (server settings as ``-c name=value``) with this statement timeout, in milliseconds."""
    others = _STATEMENT_TIMEOUT.sub("", options).strip()
    return f"{others} -c statement_timeout={seconds * 1000}".strip()
