"""What every training tool shares about a run: where it writes, what it logs, what the card records.

Checkpoints, logs and cached scores go to ``ml/runs/<model folder name>/``
(git-ignored); the command line is logged first, so every run log says how
to reproduce it, and the card's ``training`` entry names the manifest by hash
and the hardware it ran on.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ml.training.split import file_sha256

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO / "ml" / "splits" / "v1.csv"
RUNS = REPO / "ml" / "runs"


def start_run(out: str | Path, tool: str, argv: list[str] | None):
    """(run folder, open log, command line) for a training tool writing model folder ``out``.

    Checkpoints, logs and cached scores go to ``ml/runs/<folder name>/`` (git-ignored); the
    command line is logged first so every run log says how to reproduce it.
    """
    run_dir = RUNS / Path(out).name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_stream = (run_dir / "train.log").open("a")
    command = " ".join(sys.argv[1:] if argv is None else argv)
    log(f"{tool} {command}", log_stream)
    return run_dir, log_stream, command


def training_record(manifest, tool: str, command: str, train_records, val_records, **fields) -> dict:
    """The card's ``training`` entry: what every training tool records, plus its own ``fields``."""
    return {
        "manifest": os.path.relpath(Path(manifest).resolve(), REPO),
        "manifest_sha256": file_sha256(manifest),
        "n_train": len(train_records),
        "n_val": len(val_records),
        **fields,
        "hardware": hardware(),
        "command": f"python -m {tool} {command}",
    }


def log(message: str, stream=None) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    if stream is not None:
        stream.write(line + "\n")
        stream.flush()


def limited(records, n: int) -> list:
    """A seeded random subset of ``n`` records in manifest order (smoke runs need both classes)."""
    rng = np.random.default_rng(0)
    return [records[i] for i in sorted(rng.choice(len(records), min(n, len(records)), replace=False))]


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({cpu}), {'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}, TensorFlow {tf.__version__}"


def measure_speed(model, size: int, repeats: int = 5) -> dict:
    """CPU/GPU milliseconds per image through the compiled serving function, batch 1 and 32."""
    from ml.serving.inference import compiled_forward

    forward = compiled_forward(model)
    rng = np.random.default_rng(0)
    result = {}
    for batch in (1, 32):
        images = rng.integers(0, 256, (batch, size, size), dtype=np.uint8)
        forward(images)
        timings = []
        for _ in range(repeats if batch == 32 else repeats * 4):
            started = time.perf_counter()
            forward(images)
            timings.append(time.perf_counter() - started)
        result[f"ms_per_image_batch{batch}"] = round(1000 * float(np.median(timings)) / batch, 2)
    return result
