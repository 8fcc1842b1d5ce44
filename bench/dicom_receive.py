"""Benchmark: how many instances a second the DICOM listener takes in over C-STORE.

    .venv/bin/python -m bench.dicom_receive [--instances 200] [--associations 1] [--full-size]
                                            [--idle 50] [--oversized 10]

Starts ``manage.py dicom_listener`` on PostgreSQL + Redis (a fresh test
database), sends the instances with DCMTK's ``storescu`` (one association per
sender, senders in parallel) and prints instances/s and MB/s from the first
byte sent to the last success received. Every success means "stored, synced,
verified and committed". ``--full-size`` sends 2,048 x 2,500 16-bit radiographs
(10 MB each, the size of a real DX); the default is the 224 x 224 fixture.
``--idle N`` and ``--oversized N`` first open N connections that send nothing and
N that declare a 2 GiB A-ASSOCIATE-RQ and push 32 MiB of it, and hold them
open while the senders send; the listener's resident memory is printed before
they connect and after the last sender. No worker runs: this measures
receiving, not scoring. Prints, asserts nothing.
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
    parser.add_argument("--idle", type=int, default=0, help="connections held open that send nothing")
    parser.add_argument("--oversized", type=int, default=0, help="connections declaring a 2 GiB request")
    args = parser.parse_args()

    from harness.dicom_peers import (
        ListenerProcess,
        closed_by_peer,
        free_port,
        idle_connections,
        oversized_request,
        radiograph_copies,
        rss_bytes,
    )
    from harness.worker_process import postgres_worker_env
    from screening.models import ReceivedInstance

    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    paths = radiograph_copies(work / "in", args.instances)
    if args.full_size:
        full_size(paths)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    with fresh_services():
        port = free_port()
        env = postgres_worker_env(
            settings,
            DICOM_ALLOWED_CALLERS="STORESCU",
            # Every sender is on 127.0.0.1; the hostile connections must outlive the run.
            DICOM_MAX_ASSOCIATIONS=str(max(20, args.associations)),
            DICOM_MAX_ASSOCIATIONS_PER_PEER=str(max(4, args.associations)),
            DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS="60",
        )
        listener = ListenerProcess(env, work / "listener.log", port).start()
        hostile = []
        try:
            rss_before = rss_bytes(listener.process.pid)
            hostile = idle_connections(port, args.idle)
            pushed = [oversized_request(port) for _ in range(args.oversized)]
            hostile += [sock for sock, _ in pushed]
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
            rss_after = rss_bytes(listener.process.pid)
            idle_open = sum(not closed_by_peer(sock) for sock in hostile[: args.idle])
            received = ReceivedInstance.objects.count()
        finally:
            for sock in hostile:
                sock.close()
            listener.stop()
    print(f"instances: {args.instances} ({megabytes:.1f} MB), associations: {args.associations}")
    print(f"received and committed: {received}; senders failed: {sum(1 for f in failures if f)}")
    print(f"seconds: {seconds:.2f}")
    print(f"instances/s: {args.instances / seconds:.1f}")
    print(f"MB/s: {megabytes / seconds:.1f}")
    if args.idle or args.oversized:
        print(f"idle connections: {args.idle} (still open at the end: {idle_open})")
        print(f"oversized requests: {args.oversized}, MiB each got out before the listener hung up: ", end="")
        print(", ".join(f"{sent / 2**20:.1f}" for _, sent in pushed))
    print(f"listener RSS: {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
