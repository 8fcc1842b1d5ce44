"""Chaos run: the production shape through its faults, measured. `make chaos`.

Starts its own PostgreSQL cluster and a Redis without persistence on private
loopback ports (nothing shared is touched), migrates, starts one worker with
beat (its pool as deployed: ``CELERY_WORKER_CONCURRENCY`` processes), and for
each fault submits a fresh batch of unique studies, breaks one component while
the batch is being scored, brings it back, and measures:

- lost: studies of the batch that did not end DONE;
- duplicated: results beyond one per study;
- seconds from the component being back to the next study finished (scoring resumed) and to
  every study DONE.

Faults: one pool process killed (SIGKILL), every pool process killed, the
worker killed (SIGKILL, pool included) and restarted; Redis restarted with its
queues empty, restarted with its append-only file (queues kept), and frozen
(SIGSTOP) for 20 s; PostgreSQL stopped for 20 s and for 120 s, and frozen
(SIGSTOP) for 20 s; a submission killed after its rows committed but before
its messages were sent (its broker a socket that never answers); the media
disk full while a batch is scored and another is submitted (as root, the
media folder is a tmpfs of its own, filled to the last byte).
Needs PostgreSQL's server binaries (initdb, pg_ctl), redis-server and, as root,
the ``postgres`` account. Not a test: prints a table, asserts nothing.

    .venv/bin/python -m bench.chaos [--studies 500] [--long-outage 120]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from harness.worker_process import WorkerProcess

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

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to the postmaster and every backend (SIGSTOP: a server that hangs, sockets open)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *children(postmaster)]:
            with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
                os.kill(pid, signum)


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Redis:
    def __init__(self, work: Path):
        self.log, self.dir = work / "redis.log", work / "redis-data"
        self.dir.mkdir()
        self.process: subprocess.Popen | None = None
        self.persistent = False  # an append-only file fsynced every write: a restart keeps the queues

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
            + persistence,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True).returncode == 0,
            30,
        )

    def stop(self) -> None:
        self.process.kill()  # no save, no goodbye: without the append-only file the queues are gone
        self.process.wait(timeout=30)


class Worker:
    """One worker with beat, started again after each kill (``harness.worker_process.WorkerProcess``)."""

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

    def pool(self) -> list[int]:
        """Pids of the pool processes: the worker's children that have written a warm heartbeat."""
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres", connect_timeout=3) as db:
            warm = {
                int(name.rsplit(":", 1)[1])
                for (name,) in db.execute("SELECT hostname FROM screening_workerheartbeat WHERE warm").fetchall()
            }
        return [pid for pid in children(self.process.process.pid) if pid in warm]

    def kill_pool(self, how_many: int | None = None) -> None:
        pids = self.pool()
        if not pids:
            raise RuntimeError("no warm pool process to kill")
        for pid in pids[:how_many]:
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Media:
    """The media folder; as root, a tmpfs of its own, so that it can be filled without touching the host's disk."""

    def __init__(self, folder: Path, megabytes: int):
        self.folder, self.filler = folder, folder / "chaos-filler"
        folder.mkdir()
        self.mounted = os.geteuid() == 0
        if self.mounted:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], check=True)

    def fill(self) -> None:
        """Take every free byte (a reservation, then single bytes until the disk refuses)."""
        stats = os.statvfs(self.folder)
        with self.filler.open("wb", buffering=0) as handle:  # unbuffered: nothing left to flush on close
            os.posix_fallocate(handle.fileno(), 0, max(stats.f_bavail * stats.f_frsize - 4096, 1))
            handle.seek(0, os.SEEK_END)
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 512)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        """Partial writes left behind: the store's temporary files (``.part``), which no failure may leave."""
        return [p for p in self.folder.rglob("*") if p.is_file() and p.suffix == ".part"]

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)


class Silent:
    """A TCP port that accepts connections and never answers: a broker that hangs."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]


FAULTS = (
    "pool-one",
    "pool-all",
    "kill",
    "redis",
    "redis-aof",
    "redis-stop",
    "pg-short",
    "pg-long",
    "pg-stop",
    "lost-publish",
    "disk-full",
)


def newest_batch() -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres", connect_timeout=3) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM screening_batch").fetchone()[0]


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


def submit_folder(env: dict[str, str], folder: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "submit_folder", str(folder), "--user", "submitter"],
        cwd=ROOT,
        env=env,
        check=check,
        capture_output=True,
        text=True,
    )


def submit(env: dict[str, str], folder: Path) -> int:
    out = submit_folder(env, folder).stdout
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
    parser.add_argument("--media-megabytes", type=int, default=4096, help="size of the media tmpfs (as root)")
    parser.add_argument(
        "faults", nargs="*", default=list(FAULTS), help=f"which faults, in order (default: all of {FAULTS})"
    )
    args = parser.parse_args()
    if PG_BIN is None or not shutil.which("redis-server"):
        raise SystemExit("needs PostgreSQL server binaries under /usr/lib/postgresql and redis-server")

    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    cluster, redis = Cluster(work), Redis(work)
    media = Media(work / "media", args.media_megabytes)
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
        MEDIA_ROOT=str(media.folder),
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
            measure(name, batch, time.monotonic())

        def measure(name: str, batch: int, back: float) -> None:
            def terminal(now: dict) -> int:
                return now.get("DONE", 0) + now.get("FAILED", 0) + now.get("REJECTED", 0)

            # Scoring resumed: the first study finished after the component came back (at once when all had).
            before = terminal(counts(batch))
            wait_for(lambda: before == args.studies or terminal(counts(batch)) > before, 900, 0.1)
            resumed = time.monotonic() - back
            wait_for(lambda: terminal(counts(batch)) == args.studies, 900)
            seconds = time.monotonic() - back
            final = counts(batch)
            lost = args.studies - final.get("DONE", 0)
            rows.append((name, lost, final["results"] - final["scored"], resumed, seconds))
            print(
                f"{name:44} lost {lost:4d}   duplicated {rows[-1][2]:3d}   "
                f"resumed after {resumed:5.1f} s   {seconds:6.1f} s to all DONE",
                flush=True,
            )

        def lost_publish() -> None:
            """A submission killed after its rows committed, while its messages were on their way."""
            silent = Silent()
            hung = {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{silent.port}/0"}
            folder = make_files(work / "lost-publish", Path(args.originals), args.studies, "lost-publish")
            before = newest_batch()
            process = subprocess.Popen(
                [sys.executable, "manage.py", "submit_folder", str(folder), "--user", "submitter"],
                cwd=ROOT,
                env=hung,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: newest_batch() > before and counts(newest_batch()).get("QUEUED", 0) > 0, 300, 0.02)
            process.kill()
            process.wait()
            measure("submission killed between commit and publish", newest_batch(), time.monotonic())

        def disk_full() -> None:
            """The media disk fills while a batch is scored; a submission meanwhile must be refused whole."""
            name = "media disk full during a batch and an upload"
            if not media.mounted:
                print(f"{name:44} skipped: needs root for its own tmpfs", flush=True)
                return
            batch = submit(env, make_files(work / "disk-full", Path(args.originals), args.studies, "disk-full"))
            wait_for(lambda: counts(batch).get("RUNNING", 0) > 0, 300, 0.05)
            late = make_files(work / "disk-full-late", Path(args.originals), 20, "disk-full-late")
            before = newest_batch()
            media.fill()
            refused = submit_folder(env, late, check=False)
            rows_kept = newest_batch() != before and sum(counts(newest_batch()).values()) > 0
            partial = media.leftovers()
            media.free()
            measure(name, batch, time.monotonic())
            said = (refused.stderr or refused.stdout).strip().splitlines() or [""]
            print(
                f"{'':44} the submission during it: exit {refused.returncode}, "
                f"{'rows kept' if rows_kept else 'no rows'}, {len(partial)} partial files: {said[-1][:120]}",
                flush=True,
            )
            again = submit(env, late)  # the same files once there is room: accepted and scored
            wait_for(lambda: counts(again).get("DONE", 0) == 20, 300)

        def outage(seconds: int):
            def pause() -> None:
                cluster.stop()
                time.sleep(seconds)

            return pause

        def frozen(component, seconds: int):
            def pause() -> None:
                component(signal.SIGSTOP)
                time.sleep(seconds)

            return pause

        def restart_redis(persistent: bool):
            def restart() -> None:
                redis.persistent = persistent
                redis.start()

            return restart

        def nothing() -> None:
            pass

        faults = {
            "pool-one": ("one pool process killed (SIGKILL)", lambda: worker.kill_pool(1), nothing, "RUNNING"),
            "pool-all": ("every pool process killed (SIGKILL)", worker.kill_pool, nothing, "RUNNING"),
            "kill": ("worker killed (SIGKILL) and restarted", worker.kill, worker.start, "RUNNING"),
            "redis": ("Redis restarted empty (no persistence)", redis.stop, restart_redis(False), "DONE"),
            "redis-aof": ("Redis restarted with its append-only file", redis.stop, restart_redis(True), "DONE"),
            "redis-stop": (
                f"Redis frozen (SIGSTOP) {args.short_outage} s",
                frozen(lambda signum: redis.process.send_signal(signum), args.short_outage),
                lambda: redis.process.send_signal(signal.SIGCONT),
                "DONE",
            ),
            "pg-short": (f"PostgreSQL down {args.short_outage} s", outage(args.short_outage), cluster.start, "DONE"),
            "pg-long": (f"PostgreSQL down {args.long_outage} s", outage(args.long_outage), cluster.start, "DONE"),
            "pg-stop": (
                f"PostgreSQL frozen (SIGSTOP) {args.short_outage} s",
                frozen(cluster.signal_all, args.short_outage),
                lambda: cluster.signal_all(signal.SIGCONT),
                "DONE",
            ),
        }
        seen: dict[str, int] = {}
        for tag in args.faults:
            if tag == "lost-publish":
                lost_publish()
                continue
            if tag == "disk-full":
                disk_full()
                continue
            name, break_it, fix_it, when = faults[tag]
            if tag == "redis-aof" and not redis.persistent:
                redis.stop()
                restart_redis(True)()  # the append-only file must exist before the fault
            seen[tag] = seen.get(tag, 0) + 1  # a fault named twice gets fresh files the second time
            run(name, tag if seen[tag] == 1 else f"{tag}{seen[tag]}", break_it, fix_it, when)
    finally:
        worker.stop()
        redis.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()
        media.unmount()
    print()
    print(f"| fault ({args.studies} studies) | lost | duplicated | seconds to the next result | to all DONE |")
    print("|---|---|---|---|---|")
    for name, lost, duplicated, resumed, seconds in rows:
        print(f"| {name} | {lost} | {duplicated} | {resumed:.1f} | {seconds:.1f} |")
    print(f"(logs in {work})")


if __name__ == "__main__":
    main()
