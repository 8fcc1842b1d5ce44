"""The production settings docker-compose ships pass Django's own deployment check (issue 12)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.worker_process import ROOT, base_env


def compose_app_environment() -> dict[str, str]:
    """The x-app environment of docker-compose.yml, ``${VAR:-default}`` read as its default."""
    import re

    env, inside = {}, False
    for line in (ROOT / "docker-compose.yml").read_text().splitlines():
        if line.strip().startswith("environment: &app-env"):
            inside = True
            continue
        if inside:
            match = re.match(r"^    ([A-Z_]+): (.*)$", line)
            if not match:
                if line.strip().startswith("#"):
                    continue
                break
            value = match.group(2).strip().strip('"')
            default = re.match(r"^\$\{[A-Z_]+:-(.*)\}$", value)
            env[match.group(1)] = default.group(1) if default else value
    return env


@pytest.mark.e2e
def test_check_deploy_is_clean_with_the_compose_environment(tmp_path):
    compose = compose_app_environment()
    assert compose["DJANGO_BEHIND_TLS_PROXY"] == "1"
    assert compose["DJANGO_SECURE_SSL_REDIRECT"] == "1"
    env = base_env(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        **{k: v for k, v in compose.items() if k.startswith("DJANGO_SECURE") or k == "DJANGO_BEHIND_TLS_PROXY"},
        DJANGO_SECRET_KEY="k" + "x9Q!" * 20,
        DJANGO_ALLOWED_HOSTS="screening.example.org",
        SCREENING_VAR_DIR=str(tmp_path),
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set in this process by the browser tests, not in deployment
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout, done.stdout + done.stderr


def test_compose_runs_the_dicom_listener_on_a_published_port_open_to_no_one_by_default():
    text = (ROOT / "docker-compose.yml").read_text()
    service = text[text.index("\n  dicom:") : text.index("\n  beat:")]
    assert 'command: ["python", "manage.py", "dicom_listener"]' in service
    assert '"${DICOM_PORT:-11112}:11112"' in service
    assert "DICOM_BIND: 0.0.0.0" in service
    assert "DICOM_ALLOWED_CALLERS: ${DICOM_ALLOWED_CALLERS:-}" in service
    assert compose_app_environment()["DICOM_DESTINATIONS"] == ""


def test_make_run_starts_the_listener_for_local_callers_only():
    procfile = (ROOT / "Procfile.local").read_text()
    (line,) = [entry for entry in procfile.splitlines() if entry.startswith("dicom:")]
    assert "manage.py dicom_listener --optional" in line
    assert '"${DICOM_ALLOWED_CALLERS:-*@127.0.0.1}"' in line


def test_compose_has_a_gpu_worker_that_builds_tensorflow_with_cuda_and_reserves_a_gpu():
    text = (ROOT / "docker-compose.yml").read_text()
    service = text[text.index("\n  worker-gpu:") : text.index("\n  beat:")]
    assert 'profiles: ["gpu"]' in service
    assert "TF_VARIANT: gpu" in service
    assert "driver: nvidia" in service
    assert "capabilities: [gpu]" in service
    assert 'TF_FORCE_GPU_ALLOW_GROWTH: "true"' in service
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TF_VARIANT=cpu" in dockerfile
    assert "tensorflow[and-cuda]" in dockerfile
    # The GPU install keeps numpy, Keras, protobuf … at the tested versions.
    gpu_install = dockerfile[dockerfile.index('"tensorflow[and-cuda]') :].split(";")[0]
    assert "-c constraints.txt" in gpu_install
    # The version the GPU image installs is read from constraints.txt: it must be there.
    import re

    assert re.search(r"^tensorflow[-_]cpu==\d", (ROOT / "constraints.txt").read_text(), re.MULTILINE)


def test_the_models_and_the_migrations_agree(db):
    """A model change without its migration (even a help text) would make the next makemigrations surprise someone."""
    import io

    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", stdout=io.StringIO())


def test_the_worker_health_check_asks_for_a_warm_pool_process_not_a_ping():
    """``celery inspect ping`` is answered by the main process while every pool process is dead (issue 26)."""
    text = (ROOT / "docker-compose.yml").read_text()
    service = text[text.index("\n  worker:") : text.index("\n  dicom:")]
    (check,) = [line for line in service.splitlines() if line.strip().startswith("test:")]
    assert '"manage.py", "worker_ready"' in check
    assert "inspect" not in check
