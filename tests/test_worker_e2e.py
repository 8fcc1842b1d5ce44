"""End to end with real worker processes: over Redis and PostgreSQL, over the
embedded defaults (SQLite and the SQLAlchemy broker), and through a crash.

These start ``celery worker`` subprocesses that load TensorFlow and the
shipped model, so each takes tens of seconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from PIL import Image

from harness.worker_process import ROOT, WorkerProcess, base_env, postgres_worker_env, wait_until
from screening.intake.submission import submit
from screening.models import Batch, Result, Study, WorkerHeartbeat
from tests.conftest import XRAYS

pytestmark = [pytest.mark.e2e, pytest.mark.worker]


@pytest.fixture
def redis_broker():
    if not getattr(django_settings, "USING_REAL_SERVICES", False):
        pytest.skip("PostgreSQL/Redis not reachable here (CI=true refuses this fallback)")
    import redis

    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.flushdb()
    yield django_settings.CELERY_BROKER_URL
    client.flushdb()


def distinct_xrays(n: int) -> list[tuple[str, bytes]]:
    """``n`` different real X-ray files (one pixel changed per copy, so each has its own hash)."""
    files = []
    for i in range(n):
        source = XRAYS[i % len(XRAYS)]
        pixels = np.array(Image.open(source).convert("L"))
        pixels[0, 0] = (int(pixels[0, 0]) + 1 + i // len(XRAYS)) % 256
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files.append((f"{i:03d}-{source.stem}.png", buffer.getvalue()))
    return files


def finished(batch_id: int) -> bool:
    return not Study.objects.filter(batch_id=batch_id, status__in=Study.UNFINISHED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_scores_a_batch_over_redis(submitter, redis_broker, settings, tmp_path):
    outcome = submit(submitter, Batch.Source.API, [(p.name, io.BytesIO(p.read_bytes())) for p in XRAYS])
    worker = WorkerProcess(postgres_worker_env(settings), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: finished(outcome.batch.pk), timeout=240, describe=worker.log)
    finally:
        worker.stop()
    studies = Study.objects.filter(batch=outcome.batch)
    assert {s.status for s in studies} == {Study.Status.DONE}, worker.log()
    assert Result.objects.filter(study__batch=outcome.batch).count() == len(XRAYS)
    assert "loaded model" in worker.log()
    from ml.serving.inference import current_model_dir

    assert f"model {current_model_dir().name} runs on CPU" in worker.log() or "runs on GPU" in worker.log()
    # One pool process here: it has every core to itself.
    cores = len(os.sched_getaffinity(0))
    assert f"{cores} thread{'s' if cores > 1 else ''} per kernel" in worker.log()


@pytest.mark.django_db(transaction=True)
def test_killing_the_worker_mid_batch_loses_no_study(submitter, redis_broker, settings, tmp_path):
    settings.SCREENING_CHUNK_SIZE = 4
    short_limits = dict(
        SCREENING_CHUNK_SIZE="4",
        CELERY_TASK_SOFT_TIME_LIMIT="20",
        CELERY_TASK_TIME_LIMIT="25",
        CELERY_BROKER_VISIBILITY_TIMEOUT="40",
        SCREENING_SWEEP_INTERVAL_SECONDS="5",
    )
    outcome = submit(submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in distinct_xrays(40)])
    env = postgres_worker_env(settings, **short_limits)
    first = WorkerProcess(env, tmp_path / "first.log").start()
    try:
        # Kill as soon as a chunk is claimed: its first forward pass (graph
        # tracing) takes seconds, so the crash lands mid-chunk.
        wait_until(
            lambda: Study.objects.filter(batch=outcome.batch, status=Study.Status.RUNNING).exists(),
            timeout=240,
            interval=0.1,
            describe=first.log,
        )
    finally:
        first.kill_hard()
    assert not finished(outcome.batch.pk), "the batch finished before the crash; the test proves nothing"

    second = WorkerProcess(env, tmp_path / "second.log", "--beat", "--schedule", str(tmp_path / "beat")).start()
    try:
        wait_until(lambda: finished(outcome.batch.pk), timeout=300, describe=second.log)
    finally:
        second.stop()
    statuses = list(Study.objects.filter(batch=outcome.batch).values_list("status", flat=True))
    assert statuses == [Study.Status.DONE] * 40
    assert Result.objects.filter(study__batch=outcome.batch).count() == 40


@pytest.mark.django_db(transaction=True)
def test_an_urgent_study_overtakes_a_routine_backlog(submitter, redis_broker, settings, tmp_path):
    """Urgent work goes to its own queue, which the worker takes first: it is not scored after the backlog."""
    settings.SCREENING_CHUNK_SIZE = 2
    films = distinct_xrays(123)
    worker = WorkerProcess(
        postgres_worker_env(settings, SCREENING_CHUNK_SIZE="2"), tmp_path / "worker.log", concurrency=1
    ).start()
    try:
        warm = submit(submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in films[:2]])
        wait_until(lambda: finished(warm.batch.pk), timeout=240, describe=worker.log)
        routine = submit(submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in films[2:122]])
        urgent = submit(
            submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in films[122:]], priority=Study.Priority.URGENT
        )
        wait_until(lambda: finished(urgent.batch.pk), timeout=240, interval=0.1, describe=worker.log)
        waiting = Study.objects.filter(batch=routine.batch, status__in=Study.UNFINISHED).count()
        wait_until(lambda: finished(routine.batch.pk), timeout=300, describe=worker.log)
    finally:
        worker.stop()
    assert waiting > 0, "the urgent study was scored only after the whole routine backlog"
    assert Study.objects.get(batch=urgent.batch).status == Study.Status.DONE


def pool_processes(worker: WorkerProcess) -> list[int]:
    """The pids of the worker's pool processes: its main process's children (Linux ``/proc``)."""
    children = []
    for task in Path(f"/proc/{worker.process.pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return children


WARM = re.compile(r"pool process (\d+) warm in ([\d.]+) s")


@pytest.mark.django_db(transaction=True)
def test_killed_pool_processes_are_replaced_and_their_replacements_warm_up_and_score(
    submitter, redis_broker, settings, tmp_path
):
    """Celery killed each replacement after 4 s, before its models were warm: scoring stopped for good.

    With both pool processes killed (as in issue 26), the old setting gave 8
    "Timed out waiting for UP message" kills in a minute here and no scoring.
    """
    films = distinct_xrays(8)
    worker = WorkerProcess(postgres_worker_env(settings), tmp_path / "worker.log", concurrency=2).start()
    try:
        first = submit(submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in films[:4]])
        wait_until(lambda: finished(first.batch.pk), timeout=240, describe=worker.log)
        wait_until(lambda: len(WARM.findall(worker.log())) == 2, timeout=120, describe=worker.log)
        killed = pool_processes(worker)
        assert len(killed) == 2
        from screening.liveness import warm_processes

        wait_until(lambda: warm_processes().count() == 2, timeout=30, describe=worker.log)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        # Work that arrives while the replacements warm up waits for them (make run's shape: the test below).
        second = submit(submitter, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in films[4:]])
        # The main process marks the dead ones cold at its next beat (readiness counts warm ones only).
        dead = [f"{socket.gethostname()}:{pid}" for pid in killed]
        wait_until(
            lambda: not WorkerHeartbeat.objects.filter(hostname__in=dead, warm=True).exists(),
            timeout=60,
            describe=worker.log,
        )
        wait_until(lambda: warm_processes().count() == 2, timeout=180, describe=worker.log)
        wait_until(lambda: finished(second.batch.pk), timeout=240, describe=worker.log)
    finally:
        worker.stop()
    assert set(Study.objects.filter(batch=second.batch).values_list("status", flat=True)) == {Study.Status.DONE}
    replacements = {int(pid) for pid, _ in WARM.findall(worker.log())[2:]}
    assert not replacements & set(killed)
    assert "Timed out waiting for UP message" not in worker.log()


def embedded_setup(var, **overrides: str):
    """The environment of `make run` (SQLite and the SQL broker under ``var``), migrated, with demo accounts.

    Returns the environment and a ``manage(*args)`` that runs manage.py in it.
    """
    env = base_env(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DJANGO_SECRET_KEY="embedded-test-key",
        SCREENING_VAR_DIR=str(var),
        **overrides,
    )

    def manage(*args, timeout=300):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    var.mkdir()
    assert manage("migrate", "--noinput").returncode == 0
    accounts = manage("create_demo_accounts", "--i-know-this-is-not-production")
    assert accounts.returncode == 0, accounts.stderr
    return env, manage


def test_embedded_defaults_run_end_to_end_without_any_server(tmp_path):
    """SQLite + Celery's SQLAlchemy broker, exactly as `make run` uses them."""
    env, manage = embedded_setup(tmp_path / "var")
    # migrate prepared the broker, so the worker and the first upload never race to create a queue row
    queues = sqlite3.connect(tmp_path / "var" / "broker.sqlite3").execute("select name from kombu_queue").fetchall()
    assert sorted(queues) == [("celery",), ("urgent",)]
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        done = manage(
            "submit_folder", str(ROOT / "tests" / "fixtures" / "xray"), "--wait", "--json", "--timeout", "240"
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr + worker.log()
    lines = {json.loads(line)["file"]: json.loads(line) for line in done.stdout.splitlines()}
    images = {str(p.relative_to(p.parent.parent)) for p in XRAYS}
    assert set(lines) == images | {"LUNG_BOXES.csv"}  # every file accounted for
    assert lines["LUNG_BOXES.csv"]["status"] == "REFUSED"
    assert all(lines[name]["status"] == "DONE" and 0 <= lines[name]["probability"] <= 1 for name in images), lines
    assert (tmp_path / "var" / "db.sqlite3").exists()
    assert (tmp_path / "var" / "broker.sqlite3").exists()


def test_make_run_worker_scores_again_after_its_idle_pool_processes_are_killed(tmp_path):
    """With the embedded broker the pool processes share one task pipe, and an idle one waits holding its lock.

    Killed there, the lock (a semaphore) stayed taken: the replacements warmed
    up, heartbeat and never read a task again (issue 26's "executed nothing at
    all"). ``worker.pool`` makes that lock one the kernel releases.
    """
    env, manage = embedded_setup(tmp_path / "var")
    worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=2).start()
    try:
        wait_until(lambda: len(WARM.findall(worker.log())) == 2, timeout=180, describe=worker.log)
        killed = pool_processes(worker)
        assert len(killed) == 2
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(WARM.findall(worker.log())) == 4, timeout=180, describe=worker.log)
        done = manage(
            "submit_folder", str(ROOT / "tests" / "fixtures" / "xray"), "--wait", "--json", "--timeout", "180"
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr + worker.log()
    statuses = {json.loads(line)["status"] for line in done.stdout.splitlines()}
    assert statuses == {"DONE", "REFUSED"}, done.stdout  # the fixtures' CSV is refused, every X-ray scored
    replacements = {int(pid) for pid, _ in WARM.findall(worker.log())[2:]}
    assert not replacements & set(killed)


def test_make_run_ctrl_c_stops_the_worker_without_losing_or_stranding_a_study(tmp_path):
    """Honcho (``make run``) answers Ctrl-C with SIGTERM to the worker's whole process group.

    Without REMAP_SIGTERM the pool child dies mid-chunk and its studies wait
    for the sweep; with it (as Procfile.local sets it) the child ignores the
    signal, the running chunk finishes within the soft-shutdown timeout, and
    the messages not yet run go back to the embedded broker for the next start.
    """
    import signal
    import sqlite3

    procfile = (ROOT / "Procfile.local").read_text()
    assert "worker: REMAP_SIGTERM=SIGQUIT CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=1 " in procfile
    var = tmp_path / "var"
    env, manage = embedded_setup(var, SCREENING_SWEEP_INTERVAL_SECONDS="3600")  # no sweep to rescue anything

    def statuses() -> dict[str, int]:
        with sqlite3.connect(var / "db.sqlite3") as db:
            return dict(db.execute("select status, count(*) from screening_study group by status").fetchall())

    folder = tmp_path / "batch"
    folder.mkdir()
    for name, data in distinct_xrays(160):
        (folder / name).write_bytes(data)

    first = WorkerProcess(
        {**env, "REMAP_SIGTERM": "SIGQUIT", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "1"}, tmp_path / "first.log"
    ).start()
    try:
        submitted = manage("submit_folder", str(folder))
        assert submitted.returncode == 0, submitted.stderr
        # Past the first chunk (the worker is warm, as after a few minutes of `make run`).
        wait_until(lambda: statuses().get("DONE", 0) >= 32, timeout=240, interval=0.05, describe=first.log)
        os.killpg(first.process.pid, signal.SIGTERM)  # what honcho does on Ctrl-C
        try:
            first.process.wait(timeout=120)  # it must stop by itself: honcho's SIGKILL would come after 5 s
            stopped_by_itself = True
        except subprocess.TimeoutExpired:
            stopped_by_itself = False
    finally:
        if first.process.poll() is None:
            first.kill_hard()
    assert stopped_by_itself, f"the worker did not stop on SIGTERM\n{first.log()}"
    assert "exited with 'signal 15" not in first.log()
    after_stop = statuses()
    assert after_stop.get("RUNNING", 0) == 0, after_stop  # nothing stranded for the sweep
    assert 0 < after_stop["DONE"] < 160, f"{after_stop}: the test needs the stop to land mid-batch"

    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        wait_until(lambda: statuses() == {"DONE": 160}, timeout=240, describe=second.log)
    finally:
        second.stop()
    with sqlite3.connect(var / "db.sqlite3") as db:
        assert db.execute("select count(*), count(distinct study_id) from screening_result").fetchone() == (160, 160)
