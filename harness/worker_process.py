"""Start and stop a real ``celery worker`` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BackgroundProcess:
    """A service process a test starts in its own session, so that it can be stopped or killed whole."""

    log_path: Path
    process: subprocess.Popen | None = None

    def kill_hard(self) -> None:
        """``kill -9`` the whole process group (parent and children), as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill_hard()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


class WorkerProcess(BackgroundProcess):
    def __init__(self, env: dict[str, str], log_path: Path, *extra_args: str, concurrency: int | None = 1):
        self.concurrency = concurrency  # None: as deployed (CELERY_WORKER_CONCURRENCY)
        self.env = env
        self.log_path = log_path
        self.extra_args = extra_args

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                *(["--concurrency", str(self.concurrency)] if self.concurrency is not None else []),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *self.extra_args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self


def base_env(**overrides: str) -> dict[str, str]:
    # The worker gets the test's settings, not the developer's shell's; only
    # the model to serve may be chosen from outside.
    env = {
        k: v
        for k, v in os.environ.items()
        if k == "SCREENING_MODEL_DIR" or not k.startswith(("DATABASE_URL", "CELERY_", "SCREENING_", "MEDIA_ROOT"))
    }
    env.update(overrides)
    return env


def start_up(*code: str, **env: str) -> subprocess.CompletedProcess:
    """Load production settings (``webapp.settings``) in a fresh interpreter with ``env``; run ``code`` after."""
    program = "; ".join(("import django", "django.setup()", *code))
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=base_env(DJANGO_SETTINGS_MODULE="webapp.settings", DJANGO_SECRET_KEY="x", **env),
        capture_output=True,
        text=True,
    )


def postgres_worker_env(settings, **overrides: str) -> dict[str, str]:
    """A worker's environment that points at this process's test database, broker and media folder."""
    from django.db import connection

    database = connection.settings_dict
    user, host, port = database["USER"] or "postgres", database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    return base_env(
        DJANGO_SETTINGS_MODULE="webapp.settings_test",
        TEST_DATABASE_URL=f"postgres://{user}@{host}:{port}/{database['NAME']}",
        TEST_BROKER_URL=settings.CELERY_BROKER_URL,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        **overrides,
    )


def wait_until(condition, timeout: float, interval: float = 0.5, describe=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s: {describe()}")
