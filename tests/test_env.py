import json
import logging
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from harness.worker_process import ROOT, base_env, start_up
from webapp.env import env_bool, env_float, env_int, env_list, env_secret
from webapp.logs import JsonFormatter


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False)]
)
def test_env_bool_reads_common_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not expected) is expected


def test_env_bool_refuses_a_typo(monkeypatch):
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        env_bool("FLAG", False)


def test_env_int_refuses_units_and_out_of_range(monkeypatch):
    monkeypatch.setenv("SIZE", "10MB")
    with pytest.raises(ImproperlyConfigured, match="SIZE"):
        env_int("SIZE", 1)
    monkeypatch.setenv("SIZE", "0")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("SIZE", 1, minimum=1)


def test_env_int_default_when_unset(monkeypatch):
    monkeypatch.delenv("SIZE", raising=False)
    assert env_int("SIZE", 7) == 7


def test_env_list_refuses_empty_items(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example,,b.example")
    with pytest.raises(ImproperlyConfigured):
        env_list("HOSTS", [])
    monkeypatch.setenv("HOSTS", "a.example, b.example")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_env_secret_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.delenv("KEY", raising=False)
    monkeypatch.setenv("KEY_FILE", str(secret))
    assert env_secret("KEY") == "s3cret"


def test_env_secret_refuses_both_and_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KEY", "a")
    monkeypatch.setenv("KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(ImproperlyConfigured, match="not both"):
        env_secret("KEY")
    monkeypatch.delenv("KEY")
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_secret("KEY")


@pytest.mark.e2e
def test_settings_refuse_to_start_without_a_secret_key(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env["SCREENING_VAR_DIR"] = str(tmp_path)  # no var/secret_key from a `make run` here
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
    )
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr


@pytest.mark.e2e
def test_settings_use_the_key_make_run_generated(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "secret_key").write_text("generated-by-make-run\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="webapp.settings", SCREENING_VAR_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
    )
    assert done.stdout.strip() == "generated-by-make-run", done.stderr


@pytest.mark.parametrize("raw", ["0.9x", "nan", "1.5", "0.2"])
def test_env_float_refuses_non_numbers_and_out_of_range(monkeypatch, raw):
    monkeypatch.setenv("MIN_AUC", raw)
    with pytest.raises(ImproperlyConfigured, match="MIN_AUC"):
        env_float("MIN_AUC", 0.9, minimum=0.5, maximum=1.0)


def test_env_float_reads_a_number(monkeypatch):
    monkeypatch.setenv("MIN_AUC", " 0.85 ")
    assert env_float("MIN_AUC", 0.9, minimum=0.5, maximum=1.0) == 0.85
    monkeypatch.delenv("MIN_AUC")
    assert env_float("MIN_AUC", 0.9, minimum=0.5, maximum=1.0) == 0.9


def test_json_logs_are_one_object_per_line_with_the_traceback_inside():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("screening.x", logging.ERROR, __file__, 1, "chunk of %d failed", (16,), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "chunk of 16 failed"
    assert entry["level"] == "ERROR"
    assert "ValueError: boom" in entry["exception"]
    assert entry["logger"] == "screening.x"


@pytest.mark.e2e
def test_an_unknown_log_format_stops_start_up():
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=base_env(DJANGO_SETTINGS_MODULE="webapp.settings", DJANGO_SECRET_KEY="x", LOG_FORMAT="xml"),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "LOG_FORMAT='xml'" in done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DATABASE_CONNECT_TIMEOUT", "5s"),
        ("DATABASE_CONNECT_TIMEOUT", "0"),  # libpq would wait for ever
        ("DATABASE_STATEMENT_TIMEOUT", "1.5"),
        ("DATABASE_WORKER_STATEMENT_TIMEOUT", "100"),  # not below the task's soft time limit
    ],
)
def test_a_malformed_database_timeout_stops_start_up_naming_the_variable(name, raw):
    done = start_up(**{name: raw})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "instead"),
    [
        ("SCREENING_DEAD_WORKER_SECONDS", "SCREENING_PROCESS_HEARTBEAT_SECONDS"),
        ("SCREENING_STUCK_RUNNING_SECONDS", "CELERY_TASK_TIME_LIMIT"),
        ("SCREENING_STUCK_QUEUED_SECONDS", "CELERY_BROKER_VISIBILITY_TIMEOUT"),
    ],
)
def test_a_retired_recovery_timer_stops_start_up_saying_what_sets_it_now(name, instead):
    """Derived from the setting they follow since recovery is one lease; an operator who tuned one must hear it."""
    done = start_up(**{name: "30"})
    assert done.returncode != 0
    assert f"{name} is no longer a setting" in done.stderr
    assert instead in done.stderr


def test_the_recovery_timers_follow_the_settings_they_derive_from(settings):
    assert settings.SCREENING_DEAD_WORKER_SECONDS == 4 * settings.SCREENING_PROCESS_HEARTBEAT_SECONDS
    assert settings.SCREENING_STUCK_RUNNING_SECONDS > settings.CELERY_TASK_TIME_LIMIT
    assert settings.SCREENING_STUCK_QUEUED_SECONDS > settings.CELERY_BROKER_VISIBILITY_TIMEOUT


@pytest.mark.e2e
def test_a_postgresql_database_gets_the_timeouts_and_keeps_the_urls_own_options():
    done = start_up(
        "import json",
        "from django.conf import settings as s",
        "print(json.dumps(s.DATABASES))",
        DATABASE_URL="postgres://u@db.example:5432/screening?sslmode=require",
        DATABASE_CONNECT_TIMEOUT="3",
        DATABASE_STATEMENT_TIMEOUT="7",
    )
    options = json.loads(done.stdout)["default"]["OPTIONS"]
    assert options["connect_timeout"] == 3
    assert options["options"] == "-c statement_timeout=7000"
    assert options["sslmode"] == "require"
    assert options["keepalives"] == 1
    assert options["tcp_user_timeout"] > 0
