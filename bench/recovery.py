"""Benchmark: after a worker is killed mid-batch, how long until every study is DONE again?

    .venv/bin/python -m bench.recovery [--studies 200]

Submits a batch to a real worker (PostgreSQL + Redis, default timings: no
shortened limits), kills the whole worker with SIGKILL as soon as a chunk is
RUNNING, starts a fresh worker with beat at once, and prints lost and
duplicated studies and the seconds from the restart to all DONE (the fresh
worker's model loading included). Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from bench.services import fresh_services  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--originals", default=str(ROOT.parent / "shared" / "data" / "originals"))
    args = parser.parse_args()

    from django.contrib.auth.models import Group, User

    from bench.throughput import unique_files
    from harness.worker_process import WorkerProcess, postgres_worker_env, wait_until
    from screening import roles
    from screening.intake.submission import submit
    from screening.models import Batch, Result, Study

    with fresh_services():
        env = postgres_worker_env(settings)
        logs = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
        user = User.objects.create_user("bench-recovery", password="x")
        user.groups.add(Group.objects.get(name=roles.SUBMITTER))
        files = unique_files(Path(args.originals), args.studies)
        batch = submit(user, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in files]).batch
        unfinished = Study.objects.filter(batch=batch, status__in=Study.UNFINISHED)
        first = WorkerProcess(env, logs / "first.log").start()
        try:
            wait_until(lambda: Study.objects.filter(batch=batch, status="RUNNING").exists(), 300, 0.1, first.log)
        finally:
            first.kill_hard()
        left = unfinished.count()
        restarted = time.perf_counter()
        second = WorkerProcess(env, logs / "second.log", "--beat", "--schedule", str(logs / "beat")).start()
        try:
            wait_until(lambda: not unfinished.exists(), 900, 0.2, second.log)
            seconds = time.perf_counter() - restarted
        finally:
            second.stop()
        done = Study.objects.filter(batch=batch, status=Study.Status.DONE).count()
        results = Result.objects.filter(study__batch=batch).count()
        print(f"worker killed with {left} of {len(files)} studies unfinished")
        print(f"lost: {len(files) - done}   duplicated results: {results - done}")
        print(f"seconds from restart to all DONE: {seconds:.1f}")


if __name__ == "__main__":
    main()
