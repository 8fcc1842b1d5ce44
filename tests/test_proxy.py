"""Slow clients cannot starve gunicorn behind the shipped proxy configuration (issue 12).

Three anonymous connections trickling a large request body held every sync
gunicorn worker, and /healthz timed out for the whole hold. This runs
gunicorn as docker-compose does (sync workers) and ``webapp/deploy/nginx.conf``
with its ports and paths substituted, and checks both sides: straight to
gunicorn the slow clients do starve it (so the test can fail), through nginx
/healthz still answers at once. Needs Debian's nginx (``make test`` installs it
when root, like Chromium); skipped loudly without it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.worker_process import ROOT, base_env

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="no nginx: the proxy test is skipped (run `make test` as root to install it)"
)
SLOW_CLIENTS = 3
GUNICORN_WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def slow_body(port: int, tls: bool) -> socket.socket:
    """A client that announces a 50 MB upload and sends its first bytes: it never finishes its request.

    The login form with a CSRF cookie, because then the CSRF check reads the body first thing, so a
    gunicorn worker waits on the socket; anonymous, like the attack the issue reports.
    """
    raw = socket.create_connection(("127.0.0.1", port))
    sock = ssl._create_unverified_context().wrap_socket(raw) if tls else raw
    sock.sendall(
        b"POST /accounts/login/ HTTP/1.1\r\nHost: localhost\r\nCookie: csrftoken=" + b"a" * 32 + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 52428800\r\n\r\n--b\r\n"
    )
    return sock


def healthz_seconds(port: int, tls: bool) -> float:
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ssl._create_unverified_context())
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    )
    started = time.monotonic()
    try:
        connection.request("GET", "/healthz", headers={"Host": "localhost"})
        assert connection.getresponse().status == 200
    except (TimeoutError, socket.timeout):
        return float("inf")
    finally:
        connection.close()
    return time.monotonic() - started


@pytest.fixture
def stack(tmp_path):
    app_port, http_port, https_port = free_port(), free_port(), free_port()
    env = base_env(DJANGO_SETTINGS_MODULE="webapp.settings_test", DJANGO_ALLOWED_HOSTS="localhost")
    gunicorn = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "webapp.wsgi",
            "--bind",
            f"127.0.0.1:{app_port}",
            "--workers",
            str(GUNICORN_WORKERS),
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "gunicorn.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp_path / "tls.key"),
            "-out",
            str(tmp_path / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    config = (ROOT / "webapp" / "deploy" / "nginx.conf").read_text()
    for old, new in [
        ("server web:8000;", f"server 127.0.0.1:{app_port};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("/etc/nginx/certs/", f"{tmp_path}/"),
        ("/tmp/nginx", f"{tmp_path}/nginx"),
        ("access_log /dev/stdout;", f"access_log {tmp_path}/access.log;"),
        ("error_log /dev/stderr warn;", f"error_log {tmp_path}/error.log warn;"),
    ]:
        assert old in config, old
        config = config.replace(old, new)
    (tmp_path / "nginx.conf").write_text(config)
    nginx = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nginx.out").open("wb"),
        start_new_session=True,
    )
    try:
        wait_for_port(app_port)
        wait_for_port(https_port)
        yield {"app": app_port, "https": https_port, "http": http_port}
    finally:
        for process in (nginx, gunicorn):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_slow_clients_starve_bare_gunicorn_but_not_the_proxy(stack):
    assert healthz_seconds(stack["app"], tls=False) < 2  # warmed up and answering

    held = [slow_body(stack["app"], tls=False) for _ in range(SLOW_CLIENTS)]
    try:
        time.sleep(1)
        bare = healthz_seconds(stack["app"], tls=False)
    finally:
        for sock in held:
            sock.close()
    assert bare == float("inf"), "the slow clients did not starve gunicorn: this test would prove nothing"

    time.sleep(1)
    held = [slow_body(stack["https"], tls=True) for _ in range(SLOW_CLIENTS * 10)]
    try:
        time.sleep(1)
        proxied = [healthz_seconds(stack["https"], tls=True) for _ in range(5)]
    finally:
        for sock in held:
            sock.close()
    assert max(proxied) < 1.0, proxied


def test_plain_http_redirects_to_https_but_probes_answer(stack):
    connection = http.client.HTTPConnection("127.0.0.1", stack["http"], timeout=5)
    connection.request("GET", "/worklist/", headers={"Host": "localhost"})
    response = connection.getresponse()
    assert response.status == 301 and response.getheader("Location") == "https://localhost/worklist/"
    assert healthz_seconds(stack["http"], tls=False) < 2
