"""Benchmark: the CPU a study cannot do without, part by part, and the ceiling that puts on (c).

    .venv/bin/python -m bench.cpu_floor [--files 96] [--originals ../shared/data/originals]

On one thread (as a worker's pool process runs), best of five passes over
the full-resolution originals cycled, CPU milliseconds per study for:
the least any JPEG decoder does (libjpeg-turbo at its smallest DCT scale,
where only the entropy decoding is left at full cost), a full-size decode,
decoding and squashing as the worker does it, the model alone (what
``bench.throughput``'s (a) runs), the model with its heatmap, and the gate.
Then the studies/s that the machine's cores could clear if a study cost
only those parts: nothing for the database, the queue or the submission.
A throughput target above that ceiling cannot be met by the pipeline
around the model, whatever it does. Needs neither PostgreSQL nor Redis.
Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import os

# One thread for TensorFlow's kernels, before TensorFlow starts (``worker.signals.warm_up``).
os.environ["SCREENING_THREADS_PER_PROCESS"] = "1"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

import argparse  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.figures import machine  # noqa: E402
from bench.throughput import unique_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cpu_ms_per_study(work, studies: int, passes: int = 5) -> float:
    """Least CPU time of ``passes`` calls of ``work``, per study (this process's CPU, every thread counted)."""
    work()  # warm: graphs traced, files in the page cache
    least = min(_cpu_seconds(work) for _ in range(passes))
    return 1000 * least / studies


def _cpu_seconds(work) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--originals", default=str(ROOT.parent / "shared" / "data" / "originals"))
    args = parser.parse_args()

    from ml.serving import pipeline
    from worker.loaded_models import get_gate, get_screener
    from worker.signals import warm_up

    warm_up()
    explainer, gate = get_screener(), get_gate()
    files = [data for _, data in unique_files(Path(args.originals), args.files)]
    n = len(files)
    prepared = [pipeline.prepare(data, input_size=explainer.input_size) for data in files]
    batches = np.array_split(np.stack([p.pixels for p in prepared]), max(1, n // 32))

    def smallest_scale():
        for data in files:
            image = Image.open(io.BytesIO(data))
            image.draft("L", (1, 1))  # libjpeg-turbo's smallest DCT scale, 1/8
            image.load()

    def full_size():
        for data in files:
            Image.open(io.BytesIO(data)).load()

    parts = {
        "JPEG decode at 1/8 scale (the entropy decoding any decoder must do)": smallest_scale,
        "JPEG decode at full size": full_size,
        "decode + squash, as the worker does": lambda: [
            pipeline.prepare(data, input_size=explainer.input_size) for data in files
        ],
        "model alone ((a) of bench.throughput), batches of ~32": lambda: [
            explainer.screener.predict(b) for b in batches
        ],
        "model + heatmap, batches of ~32": lambda: [explainer.explain(b) for b in batches],
        "gate, batches of ~32": lambda: [gate.scores(b) for b in batches],
    }
    print(f"{machine()}, {n} studies (the originals cycled), one thread, CPU ms per study, least of 5")
    ms = {name: cpu_ms_per_study(work, n) for name, work in parts.items()}
    for name, value in ms.items():
        print(f"  {name:70} {value:6.2f}")
    cores = os.cpu_count() or 1
    least = ms["JPEG decode at 1/8 scale (the entropy decoding any decoder must do)"]
    model = ms["model alone ((a) of bench.throughput), batches of ~32"]
    deployed = sum(
        ms[name]
        for name in ("decode + squash, as the worker does", "model + heatmap, batches of ~32", "gate, batches of ~32")
    )
    for label, per_study in (
        ("least decode + model alone", least + model),
        ("the worker's decode + model + heatmap + gate", deployed),
    ):
        print(f"ceiling on {cores} cores, {label:48} {cores * 1000 / per_study:6.0f} studies/s")


if __name__ == "__main__":
    main()
