"""Celery configuration that the service's reliability depends on."""

import pytest

from screening.queue import SCORE_STUDIES_TASK, SEND_DELIVERY_TASK
from worker.app import _transport_options, app


@pytest.fixture(autouse=True, scope="module")
def _tasks_registered():
    app.loader.import_default_modules()  # what a worker does at start: import the included task modules


def test_reliability_settings():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True  # a killed pool process's message goes back to the queue
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_ignore_result is True
    assert conf.task_soft_time_limit < conf.task_time_limit


def test_only_redis_gets_a_visibility_timeout_and_socket_timeouts(settings):
    assert _transport_options("redis://127.0.0.1:6379/0") == {
        "queue_order_strategy": "priority",
        "visibility_timeout": settings.CELERY_BROKER_VISIBILITY_TIMEOUT,
        "socket_timeout": settings.CELERY_BROKER_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.CELERY_BROKER_SOCKET_TIMEOUT,
    }
    assert settings.CELERY_BROKER_VISIBILITY_TIMEOUT > settings.CELERY_TASK_TIME_LIMIT
    # The SQLAlchemy transport hands its options to create_engine, which refuses unknown keys.
    assert _transport_options("sqla+sqlite:///var/broker.sqlite3") == {}


def test_the_sweep_is_scheduled():
    entry = app.conf.beat_schedule["requeue-stuck-studies"]
    assert entry["task"] == "screening.tasks.requeue_stuck_studies_task"
    assert entry["task"] in app.tasks


def test_the_queue_publishes_a_task_the_worker_knows():
    assert SCORE_STUDIES_TASK in app.tasks
    assert SEND_DELIVERY_TASK in app.tasks


def test_the_dicom_outbox_is_swept_on_the_beat():
    entry = app.conf.beat_schedule["dicom-deliveries"]
    assert entry["task"] == "screening.tasks.queue_due_deliveries_task"
    assert entry["task"] in app.tasks


def test_the_embedded_sql_broker_is_polled_every_tenth_of_a_second(monkeypatch):
    from kombu.transport import sqlalchemy

    from worker.app import _poll_sql_broker_often

    monkeypatch.setattr(sqlalchemy.Transport, "polling_interval", 1.0)
    _poll_sql_broker_often("redis://127.0.0.1:6379/0")
    assert sqlalchemy.Transport.polling_interval == 1.0
    _poll_sql_broker_often("sqla+sqlite:///var/broker.sqlite3")
    assert sqlalchemy.Transport.polling_interval == 0.1


def test_a_cold_shutdown_lets_the_running_chunk_finish_first(settings):
    assert app.conf.worker_soft_shutdown_timeout == settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT > 0


def test_the_sql_broker_is_prepared_before_anyone_uses_it(tmp_path):
    """Tables and the queues' rows exist up front, so two processes never race to insert one."""
    import sqlite3

    from worker.app import prepare_sql_broker

    path = tmp_path / "broker.sqlite3"
    assert prepare_sql_broker(f"sqla+sqlite:///{path}") is True
    assert prepare_sql_broker(f"sqla+sqlite:///{path}") is True  # idempotent: migrate runs it every time
    rows = sqlite3.connect(path).execute("select name from kombu_queue").fetchall()
    assert sorted(rows) == sorted((queue.name,) for queue in app.conf.task_queues)  # urgent and routine


def test_other_brokers_are_left_alone():
    from worker.app import prepare_sql_broker

    assert prepare_sql_broker("redis://127.0.0.1:1/0") is False  # port 1: connecting would fail


def test_a_worker_runs_as_many_pool_processes_as_the_setting_says(settings):
    assert app.conf.worker_concurrency == settings.CELERY_WORKER_CONCURRENCY
    assert 1 <= settings.CELERY_WORKER_CONCURRENCY <= 4


@pytest.fixture
def pool_of():
    """Set the pool size the way a worker's main process does before forking; restored afterwards."""
    from celery.signals import worker_init

    from worker import loaded_models

    before = loaded_models._pool_processes

    def announce(concurrency):
        worker_init.send(sender=type("WorkController", (), {"concurrency": concurrency})())

    yield announce
    loaded_models.set_pool_processes(before)


def test_pool_processes_share_the_cores_out_one_thread_each_at_least(pool_of, settings, monkeypatch):
    from worker.loaded_models import cpu_threads

    settings.SCREENING_THREADS_PER_PROCESS = 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    pool_of(1)
    assert cpu_threads() == 8
    pool_of(2)
    assert cpu_threads() == 4
    pool_of(3)
    assert cpu_threads() == 2
    pool_of(16)
    assert cpu_threads() == 1
    settings.SCREENING_THREADS_PER_PROCESS = 3
    assert cpu_threads() == 3
