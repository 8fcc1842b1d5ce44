"""Benchmark: does a worker's memory stay flat over many studies?

    .venv/bin/python -m bench.memory [--studies 10000]

Runs what a worker process runs per chunk (``ml.serving.pipeline``: decode and
squash on the worker's decode threads, gate, model with heatmap; the overlay PNG is
drawn on first view, not here) over the fixture X-rays cycled, and prints the
process's resident memory every 1,000 studies. Flat means no leak per chunk.
Not a test: prints figures, asserts nothing. No database involved.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    chunk = int(os.environ.get("SCREENING_CHUNK_SIZE", 32))  # the worker's default chunk
    parser.add_argument("--chunk", type=int, default=chunk)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="decode threads")
    args = parser.parse_args()

    from ml.serving import pipeline
    from ml.serving.gate import ChestXrayGate
    from ml.serving.heatmap import ExplainingScreener
    from ml.serving.inference import Screener, current_model_dir
    from ml.serving.population_check import PopulationCheck

    fixtures = ROOT / "tests" / "fixtures"
    files = sorted((fixtures / "originals").glob("*.jpeg")) + sorted((fixtures / "xray").glob("*/*.jpeg"))
    data = [p.read_bytes() for p in files]
    explainer = ExplainingScreener(Screener.load(current_model_dir()))
    gate = ChestXrayGate.load()
    check = PopulationCheck.load()
    print(f"{len(files)} fixture files cycled; chunk {args.chunk}; model {explainer.version}")
    started = time.perf_counter()
    done = 0
    baseline = None
    while done < args.studies:
        prepared = pipeline.prepare_many(
            [data[(done + i) % len(data)] for i in range(args.chunk)], threads=args.threads
        )
        pipeline.score([p for p in prepared if isinstance(p, pipeline.PreparedImage)], explainer, gate, check)
        done += args.chunk
        if done % 1000 < args.chunk:
            baseline = baseline or rss_mb()
            print(
                f"{done:6d} studies  RSS {rss_mb():7.1f} MB  ({rss_mb() - baseline:+.1f} MB since 1,000)  "
                f"{done / (time.perf_counter() - started):5.1f} studies/s"
            )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
