"""Benchmark: what saturates first when worker machines are added — PostgreSQL, Redis or storage.

    .venv/bin/python -m bench.ceilings [--writers 1,2,4,8] [--chunks 60] [--messages 2000] [--files 200]

Every worker machine brings its own cores for decoding and the networks; what
they share is one PostgreSQL, one Redis and the study storage. This measures
how much of each one this machine can give:

- PostgreSQL: W writer processes each run the worker's own database path for
  chunks of SCREENING_CHUNK_SIZE (``worker.scoring.claim``, the site
  setting, ``_write_results``: results with their raw maps, the studies'
  columns, DONE) with a stand-in model answer, so no decoding and no network,
  only the ORM and PostgreSQL. Studies per second by W, and p95 per chunk;
- Redis: scoring messages published per second (``queue.send_score_task``),
  one message a chunk;
- storage: files of 1 MB written as a submission writes them
  (``storage.store_verified``: copy, fsync, verification), files and MB per second.

On one machine the writers share its cores with PostgreSQL, so the figures
are a floor for a dedicated database server. Not a test: prints figures,
asserts nothing. Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing
import os
import time
import types

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from bench.figures import machine, p50_p95  # noqa: E402
from bench.services import fresh_services  # noqa: E402


def _queued_chunks(user, count: int, size: int) -> list[list[int]]:
    """``count`` chunks of new QUEUED studies (rows only: nothing is decoded here)."""
    from screening.models import Batch, Study
    from screening.queue import chunked

    batch = Batch.objects.create(submitted_by=user, source=Batch.Source.API)
    token = os.urandom(4).hex()
    studies = Study.objects.bulk_create(
        Study(
            batch=batch,
            file=f"studies/00/{token}{i:06d}.jpg",
            original_name=f"{i}.jpeg",
            sha256=f"{token}{i:056d}",
            size_bytes=300_000,
            format=Study.Format.JPEG,
            status=Study.Status.QUEUED,
        )
        for i in range(count * size)
    )
    return chunked([s.pk for s in studies], size)


def _stand_in_outcome(rng: np.random.Generator):
    """What the model hands the write path for one study: a probability, a 14x14 map, the population check."""
    from ml.serving import pipeline
    from ml.serving.inference import Prediction

    probability = float(rng.random())
    label = "PNEUMONIA" if probability >= 0.871 else "NORMAL"
    return pipeline.Scored(
        Prediction(probability, label, None),
        rng.random((14, 14)).astype(np.float32),
        (0.2, 0.3, 0.5, 0.7) if label == "PNEUMONIA" else None,
        adult_probability=0.01,
        adult_threshold=0.5,
        population_check_version="population-v1",
        outside_lungs=0.1,
    )


def _write_chunks(chunks: list[list[int]], name: str, timings) -> None:
    """One writer process: the worker's database path for each chunk."""
    from ml.serving.population import Verdict
    from screening.selectors import current_site_setting
    from worker import scoring

    connections.close_all()  # a forked child opens its own connection
    rng = np.random.default_rng(len(chunks) + os.getpid())
    explainer = types.SimpleNamespace(version="bench-model", threshold=0.871, card={})
    verdict = Verdict("validated", "the image looks like a child's chest X-ray (population check 0.01)", "image_check")
    for ids in chunks:
        started = time.perf_counter()
        studies = scoring.claim(ids, name)
        setting = current_site_setting(explainer.version)
        scored = [(study, _stand_in_outcome(rng), verdict) for study in studies]
        scoring._write_results(scored, explainer, setting, 3.0)
        timings.append((time.perf_counter() - started) * 1000)
    connections.close_all()


def postgres(user, writers: int, chunks_per_writer: int, size: int) -> None:
    chunks = _queued_chunks(user, writers * chunks_per_writer, size)
    connections.close_all()
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        timings = manager.list()
        processes = [
            context.Process(target=_write_chunks, args=(chunks[w::writers], f"bench:{w}", timings))
            for w in range(writers)
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        seconds = time.perf_counter() - started
        latencies = list(timings)
    if any(process.exitcode for process in processes):
        raise SystemExit("a writer process failed")
    studies = len(chunks) * size
    print(
        f"PostgreSQL, {writers} writer process{'es' if writers > 1 else '':2}  {studies / seconds:8.0f} studies/s   "
        f"chunk of {size}: {p50_p95(latencies)}"
    )


def redis_publish(messages: int, size: int) -> None:
    from screening.queue import send_score_task

    send_score_task(list(range(size)))  # connect once
    started = time.perf_counter()
    for i in range(messages):
        send_score_task(list(range(i * size, (i + 1) * size)))
    seconds = time.perf_counter() - started
    rate = messages / seconds
    print(f"Redis, scoring messages published   {rate:8.0f} messages/s   ({rate * size:.0f} studies/s)")


def storage_writes(files: int) -> None:
    from screening.intake import storage

    payload = os.urandom(1024 * 1024)
    started = time.perf_counter()
    for i in range(files):
        data = payload[:-8] + i.to_bytes(8, "big")
        storage.store_verified(f"bench/{i:06d}.bin", io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data))
    seconds = time.perf_counter() - started
    rate = files / seconds
    print(f"Storage, 1 MB files stored (fsync)  {rate:8.0f} files/s      ({rate:.0f} MB/s, one thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--chunks", type=int, default=60, help="chunks per writer")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    size = settings.SCREENING_CHUNK_SIZE
    print(f"{machine()}, chunks of {size}; MEDIA_ROOT {settings.MEDIA_ROOT}")
    with fresh_services():
        from django.contrib.auth.models import User

        user = User.objects.create_user("bench-ceilings")
        for writers in [int(w) for w in args.writers.split(",")]:
            postgres(user, writers, args.chunks, size)
        redis_publish(args.messages, size)
    storage_writes(args.files)


if __name__ == "__main__":
    main()
