"""The production settings docker-compose ships pass Django's own deployment check (issue 12)."""

from __future__ import annotations

import subprocess
import sys

from tests.worker_process import ROOT, base_env


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


def test_check_deploy_is_clean_with_the_compose_environment(tmp_path):
    compose = compose_app_environment()
    assert compose["DJANGO_BEHIND_TLS_PROXY"] == "1" and compose["DJANGO_SECURE_SSL_REDIRECT"] == "1"
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
    assert done.returncode == 0 and "no issues" in done.stdout, done.stdout + done.stderr
