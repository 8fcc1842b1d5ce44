"""Benchmark: how fast studies clear, from the model alone to the whole queue.

    .venv/bin/python -m bench.throughput [--files 500] [--originals ../shared/data/originals] [--scale 1x1,2x1,1x2]

(a) the model alone on preprocessed tensors (batches of the chunk size);
(b) everything a worker does to a chunk in one process, through the worker's own
    ``ml.serving.pipeline``: decode and preprocess (on a
    thread per core), the out-of-distribution gate and the model + heatmap (side by side, on two threads);
(c) the whole pipeline: submission (store, rows, enqueue) → Redis → real
    worker processes → results in PostgreSQL, timed from the first upload byte
    to the last result; with ``--scale`` once per configuration WORKERSxCONCURRENCY
    (worker processes x pool processes each), with the scaling efficiency
    against the first configuration and the cores the worker processes kept
    busy from the commit to the last result (CPU seconds from /proc);
then a single study submitted to an idle system, repeated, for its latency.
The overlay PNG is no longer drawn by the worker (it is drawn when a study is
first viewed); its cost per study is printed for reference.
Files are the full-resolution originals cycled, each made unique (bytes
appended after the JPEG end marker), so no study is deduplicated away.
Not a test: prints figures, asserts nothing. Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from bench.figures import machine, p50_p95  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def line(name, studies, seconds, latencies_ms=None):
    text = f"{name:52} {studies / seconds:7.1f} studies/s"
    if latencies_ms:
        text += f"   {p50_p95(latencies_ms)}"
    print(text)


def unique_files(originals: Path, count: int) -> list[tuple[str, bytes]]:
    sources = sorted(p for p in originals.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not sources:
        raise SystemExit(f"no JPEG/PNG files in {originals}")
    return [
        (f"{i:04d}-{sources[i % len(sources)].name}", sources[i % len(sources)].read_bytes() + f"\n#{i}".encode())
        for i in range(count)
    ]


def in_process(files, explainer, gate, check, chunk: int, threads: int):
    """(b): the production chunk path (``ml.serving.pipeline``), as ``worker.scoring`` runs it."""
    from ml.serving import pipeline

    images = []
    shares = {"decode": 0.0, "preprocess": 0.0, "colour cue": 0.0, "gate + model + heatmap": 0.0}
    latencies = []
    started = time.perf_counter()
    for first in range(0, len(files), chunk):
        chunk_started = time.perf_counter()
        prepared = pipeline.prepare_many(
            [data for _, data in files[first : first + chunk]],
            threads=threads,
            input_size=explainer.input_size,
            timings=shares,
        )
        prepared = [p for p in prepared if isinstance(p, pipeline.PreparedImage)]
        pipeline.score(prepared, explainer, gate, check, timings=shares)
        latencies.append((time.perf_counter() - chunk_started) * 1000)
        images.extend(image.pixels for image in prepared)
    return time.perf_counter() - started, shares, latencies, np.stack(images)


def overlay_ms(files, explainer, count: int = 32) -> float:
    """What drawing the overlay PNG costs per study (now done on first view, not by the worker)."""
    from ml.serving import pipeline

    prepared = [pipeline.prepare(data, input_size=explainer.input_size) for _, data in files[:count]]
    outcomes = pipeline.score(prepared, explainer, None)
    started = time.perf_counter()
    for image, outcome in zip(prepared, outcomes, strict=False):
        outcome.overlay_png(image.width, image.height)
    return (time.perf_counter() - started) * 1000 / len(prepared)


def worker_pids(worker) -> list[int]:
    """A worker's main process and its pool processes."""
    pid = worker.process.pid
    return [pid] + [int(p) for p in os.popen(f"pgrep -P {pid}").read().split()]


def cpu_seconds(pool) -> float:
    """CPU seconds that the worker processes of ``pool`` (main and pool processes) have used so far."""
    total = 0.0
    for worker in pool:
        for pid in worker_pids(worker):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def through_queue(files, user, env, logs: Path, run: int, workers: int, concurrency: int):
    """(c) with ``workers`` worker processes of ``concurrency`` pool processes.

    Returns seconds, submission seconds, DONE, latencies, the cores the
    workers kept busy from the commit to the last result, and the workers.

    Every run gets its own bytes (``run`` is its place in ``--scale``, which
    may name a configuration twice): a file scored in an earlier batch would
    only be linked to that result, not scored again.
    """
    tag = f"#{run}:{workers}x{concurrency}".encode()
    files = [(name, data + tag) for name, data in files]
    from django.db.models import Max
    from django.utils import timezone

    from harness.worker_process import WorkerProcess, wait_until
    from screening.intake.submission import submit
    from screening.models import Batch, Study

    pool = [
        WorkerProcess(
            env, logs / f"worker-{run}-{workers}x{concurrency}-{i}.log", "-n", f"bench{i}@%h", concurrency=concurrency
        )
        for i in range(workers)
    ]
    for worker in pool:
        worker.start()
    try:
        # Warm every pool process (model loaded, graph traced): one chunk each.
        warm_files = [
            (f"warm-{i}.jpeg", files[i % len(files)][1] + f"warm{i}".encode())
            for i in range(16 * len(pool) * concurrency)
        ]
        warm = submit(user, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in warm_files]).batch
        wait_until(
            lambda: not Study.objects.filter(batch=warm, status__in=Study.UNFINISHED).exists(),
            600,
            describe=pool[0].log,
        )
        started, first_byte = time.perf_counter(), timezone.now()
        batch = submit(user, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in files]).batch
        submitted, worker_cpu = time.perf_counter(), cpu_seconds(pool)
        wait_until(
            lambda: not Study.objects.filter(batch=batch, status__in=Study.UNFINISHED).exists(), 1800, 0.2, pool[0].log
        )
        # Up to the last result as the worker stamped it, not as the 0.2 s poll saw it.
        last = Study.objects.filter(batch=batch).aggregate(last=Max("finished_at"))["last"]
        seconds = (last - first_byte).total_seconds()
        busy = (cpu_seconds(pool) - worker_cpu) / max(seconds - (submitted - started), 1e-9)
    except BaseException:
        for worker in pool:
            worker.stop()
        raise
    rows = list(Study.objects.filter(batch=batch).values_list("status", "created_at", "finished_at"))
    done = sum(1 for status, *_ in rows if status == Study.Status.DONE)
    latencies = [(finished - created).total_seconds() * 1000 for _, created, finished in rows if finished]
    return seconds, submitted - started, done, latencies, busy, pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--originals", default=str(ROOT.parent / "shared" / "data" / "originals"))
    parser.add_argument("--single", type=int, default=20, help="single-study submissions to time")
    parser.add_argument(
        "--scale",
        default=f"1x{settings.CELERY_WORKER_CONCURRENCY}",
        help="(c) configurations WORKERSxCONCURRENCY, comma-separated (e.g. 1x1,2x1,1x2); "
        "default: one worker as deployed (CELERY_WORKER_CONCURRENCY pool processes)",
    )
    args = parser.parse_args()
    scales = [tuple(int(n) for n in item.split("x")) for item in args.scale.split(",")]
    chunk = settings.SCREENING_CHUNK_SIZE
    files = unique_files(Path(args.originals), args.files)
    print(f"{len(files)} files, {sum(len(d) for _, d in files) / 1e6:.0f} MB, chunk size {chunk}, {machine()}")

    from worker.loaded_models import get_gate, get_population_check, get_screener

    explainer = get_screener()
    gate = get_gate()
    check = get_population_check()
    print(f"model {explainer.version}, gate {gate.version}")

    # (b) first (it also gives (a) its preprocessed tensors).
    warm = np.zeros((chunk, explainer.input_size, explainer.input_size), np.uint8)
    explainer.explain(warm)  # trace once
    gate.check(warm)
    from worker.loaded_models import cpu_threads

    threads = cpu_threads()  # one process here: every core
    seconds_b, shares, latencies_b, images = in_process(files, explainer, gate, check, chunk, threads)

    # (a) model alone.
    latencies_a = []
    started = time.perf_counter()
    for first in range(0, len(images), chunk):
        t0 = time.perf_counter()
        explainer.screener.predict(images[first : first + chunk])
        latencies_a.append((time.perf_counter() - t0) * 1000)
    seconds_a = time.perf_counter() - started
    line(f"(a) model alone, batches of {chunk}", len(images), seconds_a, latencies_a)
    line(f"(b) one process, chunks of {chunk}, {threads} decode threads", len(files), seconds_b, latencies_b)
    total = sum(shares.values())
    for stage, seconds in shares.items():
        print(f"      {stage:20} {100 * seconds / total:5.1f} %   ({1000 * seconds / len(files):6.1f} ms/study, CPU)")
    print(f"      overlay PNG, drawn on first view, not by the worker: {overlay_ms(files, explainer):.1f} ms/study")

    # (c) through the queue.
    from django.contrib.auth.models import Group, User

    from harness.worker_process import postgres_worker_env, wait_until
    from screening import roles
    from screening.intake.submission import submit
    from screening.models import Batch, Study

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    env = postgres_worker_env(settings)
    logs = Path(settings.MEDIA_ROOT)
    pool = []
    try:
        user = User.objects.create_user("bench-submitter", password="x")
        user.groups.add(Group.objects.get(name=roles.SUBMITTER))
        rates = []
        for run, (workers, concurrency) in enumerate(scales):
            for worker in pool:
                worker.stop()
            seconds_c, submission, done, latencies_c, busy, pool = through_queue(
                files, user, env, logs, run, workers, concurrency
            )
            rate = len(files) / seconds_c
            rates.append(rate)
            efficiency = rate / rates[0] / (workers * concurrency / (scales[0][0] * scales[0][1]))
            line(
                f"(c) submit -> queue -> {workers} worker x {concurrency} -> database",
                len(files),
                seconds_c,
                latencies_c,
            )
            print(
                f"      submission (store, rows, enqueue) {submission:.1f} s of {seconds_c:.1f} s; "
                f"{done}/{len(files)} DONE; scaling efficiency {efficiency:.2f}"
            )
            print(f"      worker processes kept {busy:.2f} of {os.cpu_count()} cores busy from commit to last result")
        seconds_c = len(files) / rates[0]
        print(f"ratio (c)/(b): {(len(files) / seconds_c) / (len(files) / seconds_b):.2f}")
        print(f"ratio (c)/(a): {(len(files) / seconds_c) / (len(files) / seconds_a):.2f}")
        worker = pool[0]

        single = []
        for i in range(args.single):
            t0 = time.perf_counter()
            one = submit(
                user,
                Batch.Source.API,
                [(f"single-{i}.jpeg", io.BytesIO(files[i % len(files)][1] + f"single{i}".encode()))],
            ).batch
            wait_until(
                lambda one=one: not Study.objects.filter(batch=one, status__in=Study.UNFINISHED).exists(),
                60,
                0.02,
                lambda one=one: (
                    f"{list(Study.objects.filter(batch=one).values_list('status', 'queued_at'))} {worker.log()[-1500:]}"
                ),
            )
            single.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)
        print(f"single study on an idle system: {p50_p95(single, width=0, decimals=0)}   (n={len(single)})")

        peaks = []
        for pid in worker_pids(worker):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            peaks.append(int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024)
        print(f"worker peak RSS: {max(peaks):.0f} MB (largest process; {len(peaks)} processes)")
    finally:
        for process in pool:
            process.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


if __name__ == "__main__":
    main()
