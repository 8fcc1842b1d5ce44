"""Benchmark: server time to render the worklist with 10,000 studies, and to
accept a 200-file batch upload. Not a test: prints figures, asserts nothing.

    .venv/bin/python -m bench.worklist [--studies 10000] [--requests 50]

Runs in-process through Django's test client against a throw-away test
database (PostgreSQL and Redis when they answer, as in `make test`), so the
figures are server time without network or browser. Targets (issue 5):
worklist p95 <= 300 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402
from PIL import Image  # noqa: E402

from bench.figures import p50_p95  # noqa: E402


def timed(call, repeats: int) -> list[float]:
    call()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    print(f"{name:42} {p50_p95(samples)}   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--upload-files", type=int, default=200)
    args = parser.parse_args()

    from django.contrib.auth.models import Group, User

    from screening import roles
    from screening.models import Batch, Result, Study

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        print(f"database: {connection.vendor}; broker: {settings.CELERY_BROKER_URL.split('://')[0]}")
        radiologist = User.objects.create_user("bench-radiologist", password="x")
        radiologist.groups.add(Group.objects.get(name=roles.RADIOLOGIST))
        submitter = User.objects.create_user("bench-submitter", password="x")
        submitter.groups.add(Group.objects.get(name=roles.SUBMITTER))

        started = time.perf_counter()
        now = timezone.now()
        for first in range(0, args.studies, 2000):
            batch = Batch.objects.create(submitted_by=submitter, source=Batch.Source.API)
            studies = Study.objects.bulk_create(
                Study(
                    batch=batch,
                    file=f"studies/b/{i}.png",
                    original_name=f"{i}.png",
                    sha256=f"{i:064x}",
                    size_bytes=1,
                    format="png",
                    status=Study.Status.DONE if i % 20 else Study.Status.FAILED,
                    score=((i * 7919) % 10007) / 10007 if i % 20 else None,
                    model_label="PNEUMONIA" if (i * 7919) % 10007 > 5000 else "NORMAL",
                    finished_at=now,
                )
                for i in range(first, min(first + 2000, args.studies))
            )
            Result.objects.bulk_create(
                Result(
                    study=s,
                    model_version="bench",
                    probability=s.score,
                    label=s.model_label,
                    threshold=0.5,
                    inference_ms=1.0,
                )
                for s in studies
                if s.score is not None
            )
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("ANALYZE")
        print(f"created {args.studies} studies in {time.perf_counter() - started:.1f} s")

        client = Client()
        client.force_login(radiologist)
        report("worklist, first page", timed(lambda: client.get("/worklist/"), args.requests))
        report("worklist, page 100", timed(lambda: client.get("/worklist/?page=100"), args.requests))
        report(
            "worklist, label=PNEUMONIA filter", timed(lambda: client.get("/worklist/?label=PNEUMONIA"), args.requests)
        )
        report("worklist, rejected/failed tab", timed(lambda: client.get("/worklist/?tab=unscored"), args.requests))

        files = []
        for i in range(args.upload_files):
            buffer = io.BytesIO()
            image = Image.new("L", (224, 224), color=i % 256)
            image.putpixel((1, 1), (i // 256) % 256)
            image.save(buffer, format="PNG")
            files.append((f"{i:03d}.png", buffer.getvalue()))
        uploader = Client()
        uploader.force_login(submitter)

        def upload():
            payload = []
            for name, data in files:
                handle = io.BytesIO(data)
                handle.name = name
                payload.append(handle)
            response = uploader.post("/batches/new/", {"files": payload}, HTTP_ACCEPT="application/json")
            assert response.status_code == 202, response.content

        samples = timed(upload, 3)
        report(f"accept a {args.upload_files}-file upload", samples)
        rate = args.upload_files / (statistics.median(samples) / 1000)
        print(f"  = {rate:.0f} files/s accepted (stored, rows written, enqueued)")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        if settings.CELERY_BROKER_URL.startswith("redis"):
            import redis

            redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


if __name__ == "__main__":
    main()
