"""Benchmark: how many instances a second the DICOM listener takes in over C-STORE.

    .venv/bin/python -m bench.dicom_receive [--instances 200] [--associations 1] [--full-size]

Starts ``manage.py dicom_listener`` on PostgreSQL + Redis (a fresh test
database), sends the instances with DCMTK's ``storescu`` (one association per
sender, senders in parallel) and prints instances/s and MB/s from the first
byte sent to the last success received. Every success means "stored, synced,
verified and committed". ``--full-size`` sends 2,048 x 2,500 16-bit radiographs
(10 MB each, the size of a real DX); the default is the 224 x 224 fixture.
No worker runs: this measures receiving, not scoring. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from bench.services import fresh_services  # noqa: E402


def full_size(paths: list[Path]) -> None:
    """Rewrite each instance as a 2,048 x 2,500 16-bit image (the fixture scaled up, so it stays a radiograph)."""
    import numpy as np
    import pydicom

    for path in paths:
        dataset = pydicom.dcmread(path)
        small = dataset.pixel_array.astype(np.uint16) * 16
        rows, columns = 2500, 2048
        big = small[np.arange(rows) * small.shape[0] // rows][:, np.arange(columns) * small.shape[1] // columns]
        dataset.Rows, dataset.Columns = rows, columns
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
        dataset.PixelData = big.astype(np.uint16).tobytes()
        dataset.save_as(path, enforce_file_format=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--associations", type=int, default=1, help="parallel senders, one association each")
    parser.add_argument("--full-size", action="store_true")
    args = parser.parse_args()

    from screening.models import ReceivedInstance
    from tests.dicom_peers import ListenerProcess, free_port, radiograph_copies
    from tests.worker_process import postgres_worker_env

    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    paths = radiograph_copies(work / "in", args.instances)
    if args.full_size:
        full_size(paths)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    with fresh_services():
        port = free_port()
        listener = ListenerProcess(
            postgres_worker_env(settings, DICOM_ALLOWED_CALLERS="STORESCU"), work / "listener.log", port
        ).start()
        try:
            shares = [paths[i :: args.associations] for i in range(args.associations)]
            started = time.perf_counter()
            senders = [
                subprocess.Popen(
                    ["storescu", "-aet", "STORESCU", "-aec", "PNEUMO", "127.0.0.1", str(port), *map(str, share)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for share in shares
            ]
            failures = [s.wait() for s in senders]
            seconds = time.perf_counter() - started
            received = ReceivedInstance.objects.count()
        finally:
            listener.stop()
    print(f"instances: {args.instances} ({megabytes:.1f} MB), associations: {args.associations}")
    print(f"received and committed: {received}; senders failed: {sum(1 for f in failures if f)}")
    print(f"seconds: {seconds:.2f}")
    print(f"instances/s: {args.instances / seconds:.1f}")
    print(f"MB/s: {megabytes / seconds:.1f}")


if __name__ == "__main__":
    main()
