"""Chaos run: the production shape through its faults, measured. `make chaos`.

Starts its own PostgreSQL cluster and a Redis without persistence on private
loopback ports (nothing shared is touched), migrates, starts one worker with
beat (its pool as deployed: ``CELERY_WORKER_CONCURRENCY`` processes), and for
each fault submits a fresh batch of unique studies, breaks one component while
the batch is being scored, brings it back, and measures:

- lost: studies of the batch that did not end DONE;
- duplicated: results beyond one per study;
- seconds from the component being back to every study DONE.

Faults: the worker killed (SIGKILL, pool included) and restarted; Redis
restarted with its queues empty; PostgreSQL stopped for 20 s and for 120 s.
Needs PostgreSQL's server binaries (initdb, pg_ctl), redis-server and, as root,
the ``postgres`` account. Not a test: prints a table, asserts nothing.

    .venv/bin/python -m bench.chaos [--studies 500] [--long-outage 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
PG_PORT, REDIS_PORT = 55432, 56379
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL server tool; as root it must run as the ``postgres`` account."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + args, check=True, capture_output=True, text=True, **kwargs)


class Cluster:
    def __init__(self, work: Path):
        self.data, self.log = work / "pg", work / "pg.log"
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(work, "postgres")
            shutil.chown(self.data, "postgres")
        as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])

    def start(self) -> None:
        options = f"-p {PG_PORT} -k {self.data} -c listen_addresses=127.0.0.1"
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"])

    def stop(self) -> None:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])


class Redis:
    def __init__(self, work: Path):
        self.log = work / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True).returncode == 0,
            30,
        )

    def stop(self) -> None:
        self.process.kill()  # no save, no goodbye: the queues are gone
        self.process.wait(timeout=30)


class Worker:
    """One worker with beat, started again after each kill (``tests.worker_process.WorkerProcess``)."""

    def __init__(self, env: dict[str, str], work: Path):
        self.env, self.work, self.count = env, work, 0
        self.process: WorkerProcess | None = None

    def start(self) -> None:
        self.count += 1
        beat = ("-B", "--schedule", str(self.work / "beat-schedule"))
        log = self.work / f"worker-{self.count}.log"
        self.process = WorkerProcess(self.env, log, *beat, concurrency=None).start()  # pool as deployed

    def kill(self) -> None:
        self.process.kill_hard()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def wait_for(condition, timeout: float, interval: float = 0.2) -> float:
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (psycopg.OperationalError, psycopg.InterfaceError):
            pass  # the database is the component being broken
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        time.sleep(interval)


def counts(batch_id: int) -> dict[str, int]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres", connect_timeout=3) as db:
        rows = db.execute(
            "SELECT status, count(*) FROM screening_study WHERE batch_id = %s GROUP BY status", [batch_id]
        )
        by_status = dict(rows.fetchall())
        results, scored = db.execute(
            "SELECT count(*), count(DISTINCT r.study_id) FROM screening_result r "
            "JOIN screening_study s ON s.id = r.study_id WHERE s.batch_id = %s",
            [batch_id],
        ).fetchone()
    by_status["results"], by_status["scored"] = results, scored
    return by_status


def submit(env: dict[str, str], folder: Path) -> int:
    out = subprocess.run(
        [sys.executable, "manage.py", "submit_folder", str(folder), "--user", "submitter"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split("Batch ", 1)[1].split(":", 1)[0])


def make_files(folder: Path, originals: Path, n: int, tag: str) -> Path:
    sources = sorted(p for p in originals.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    folder.mkdir(parents=True)
    for i in range(n):
        source = sources[i % len(sources)]
        (folder / f"{tag}-{i:04d}{source.suffix}").write_bytes(source.read_bytes() + f"\n#{tag}{i}".encode())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--short-outage", type=int, default=20)
    parser.add_argument("--long-outage", type=int, default=120)
    parser.add_argument("--originals", default=str(ROOT.parent / "shared" / "data" / "originals"))
    args = parser.parse_args()
    if PG_BIN is None or not shutil.which("redis-server"):
        raise SystemExit("needs PostgreSQL server binaries under /usr/lib/postgresql and redis-server")

    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    cluster, redis = Cluster(work), Redis(work)
    cluster.start()
    redis.start()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "SCREENING_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DJANGO_SECRET_KEY="chaos-run-only",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{PG_PORT}/postgres",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
        MEDIA_ROOT=str(work / "media"),
        SCREENING_VAR_DIR=str(work / "var"),
        PYTHONUNBUFFERED="1",
    )
    worker = Worker(env, work)
    rows = []
    try:
        for command in (
            ["migrate", "--noinput"],
            [
                "create_demo_accounts",
                "--i-know-this-is-not-production",
                "--credentials-file",
                str(work / "accounts.txt"),
            ],
        ):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
        worker.start()
        warm = submit(env, make_files(work / "warm", Path(args.originals), 4, "warm"))
        wait_for(lambda: counts(warm).get("DONE", 0) == 4, 300)

        def run(name: str, tag: str, break_it, fix_it, when: str = "RUNNING") -> None:
            batch = submit(env, make_files(work / tag, Path(args.originals), args.studies, tag))
            wait_for(lambda: counts(batch).get(when, 0) > 0, 300, 0.05)
            break_it()
            fix_it()
            back = time.monotonic()
            wait_for(
                lambda: (
                    counts(batch).get("DONE", 0) + counts(batch).get("FAILED", 0) + counts(batch).get("REJECTED", 0)
                    == args.studies
                ),
                900,
            )
            seconds = time.monotonic() - back
            final = counts(batch)
            lost = args.studies - final.get("DONE", 0)
            rows.append((name, lost, final["results"] - final["scored"], seconds))
            print(f"{name:44} lost {lost:4d}   duplicated {rows[-1][2]:3d}   {seconds:6.1f} s to all DONE", flush=True)

        run("worker killed (SIGKILL) and restarted", "kill", worker.kill, worker.start)
        run("Redis restarted empty (no persistence)", "redis", redis.stop, redis.start, when="DONE")

        def outage(seconds: int):
            def pause() -> None:
                cluster.stop()
                time.sleep(seconds)

            return pause

        run(f"PostgreSQL down {args.short_outage} s", "pg-short", outage(args.short_outage), cluster.start, "DONE")
        run(f"PostgreSQL down {args.long_outage} s", "pg-long", outage(args.long_outage), cluster.start, "DONE")
    finally:
        worker.stop()
        redis.stop()
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass
    print()
    print(f"| fault ({args.studies} studies) | lost | duplicated | seconds from recovery to all DONE |")
    print("|---|---|---|---|")
    for name, lost, duplicated, seconds in rows:
        print(f"| {name} | {lost} | {duplicated} | {seconds:.1f} |")
    print(f"(logs in {work})")


if __name__ == "__main__":
    main()
