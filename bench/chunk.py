"""Benchmark: where a worker's time goes within a chunk, and how many cores each part keeps busy.

    .venv/bin/python -m bench.chunk [--files 500] [--originals ../shared/data/originals]

Submits the full-resolution originals cycled (publishing to the queue left
out; the time of that ``submit()`` is printed first), then
runs ``worker.scoring.score_chunk`` in this process on chunks of
SCREENING_CHUNK_SIZE against PostgreSQL, as a worker's task does, and prints
per chunk the wall time of each part (claim, decoding, the gate, the model,
the result writes) and the cores it used (CPU seconds of the whole process
over wall seconds: 2.0 is both cores of this machine). The gate runs beside
the model, so their rows overlap inside "score". Only full chunks are timed,
after one to warm up. Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import functools
import io
import os
import resource
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from bench.figures import machine  # noqa: E402
from bench.services import fresh_services  # noqa: E402
from bench.throughput import unique_files  # noqa: E402
from worker.signals import warm_up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Parts:
    """Wall and CPU seconds spent in each wrapped function."""

    def __init__(self):
        self.wall = collections.Counter()
        self.cpu = collections.Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), _cpu_seconds()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[label] += time.perf_counter() - wall
                self.cpu[label] += _cpu_seconds() - cpu

        setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--originals", default=str(ROOT.parent / "shared" / "data" / "originals"))
    args = parser.parse_args()
    size = settings.SCREENING_CHUNK_SIZE
    files = unique_files(Path(args.originals), args.files)

    from ml.serving import pipeline
    from screening.intake.submission import submit
    from screening.models import Batch, Study
    from worker import scoring
    from worker.loaded_models import get_gate, get_population_check, get_screener

    warm_up()  # as a worker process does when it starts
    explainer, gate, check = get_screener(), get_gate(), get_population_check()
    print(f"{machine()}, chunks of {size}, model {explainer.version}")
    with fresh_services():
        from django.contrib.auth.models import User

        user = User.objects.create_user("bench-chunk")
        with mock.patch("screening.intake.submission.enqueue_studies_on_commit"):
            started = time.perf_counter()
            batch = submit(user, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in files]).batch
            print(f"submit() of {len(files)} files, publishing left out: {time.perf_counter() - started:.2f} s")
        ids = list(Study.objects.filter(batch=batch).order_by("pk").values_list("pk", flat=True))
        chunks = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
        scoring.score_chunk(chunks[0], explainer, gate, check, claimant="bench:1")  # warm the path

        parts = Parts()
        for owner, name, label in [
            (scoring, "claim", "claim"),
            (pipeline, "prepare_many", "decode + preprocess"),
            (scoring, "current_site_setting", "site setting"),
            (pipeline, "score", "score (gate beside model)"),
            (gate, "scores", "  gate"),
            (explainer, "explain", "  model + heatmap"),
            (scoring, "_write_results", "write results"),
        ]:
            parts.wrap(owner, name, label)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        for chunk in chunks[1:]:
            scoring.score_chunk(chunk, explainer, gate, check, claimant="bench:1")
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    n = len(chunks) - 1
    print(f"per chunk of {size}: {1000 * wall / n:6.1f} ms, cores used {cpu / wall:.2f}")
    for label, seconds in parts.wall.items():
        print(f"  {label:28} {1000 * seconds / n:6.1f} ms   cores {parts.cpu[label] / max(seconds, 1e-9):.2f}")


if __name__ == "__main__":
    main()
