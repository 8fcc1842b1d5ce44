"""gunicorn behind the shipped ``webapp/deploy/nginx.conf``, on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from harness.worker_process import ROOT


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


def nginx_config(work: Path, app_port: int, http_port: int, https_port: int) -> Path:
    """The shipped file with docker-compose's names, ports and paths replaced by local ones."""
    config = (ROOT / "webapp" / "deploy" / "nginx.conf").read_text()
    for old, new in [
        ("server web:8000;", f"server 127.0.0.1:{app_port};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("/etc/nginx/certs/", f"{work}/"),
        ("/tmp/nginx", f"{work}/nginx"),
        ("access_log /dev/stdout;", f"access_log {work}/access.log;"),
        ("error_log /dev/stderr warn;", f"error_log {work}/error.log warn;"),
    ]:
        if old not in config:
            raise AssertionError(f"webapp/deploy/nginx.conf no longer contains {old!r}")
        config = config.replace(old, new)
    path = work / "nginx.conf"
    path.write_text(config)
    return path


@contextmanager
def proxied_gunicorn(work: Path, env: dict[str, str], nginx: str = "nginx", workers: int = 3):
    """Yield ``{"app", "http", "https"}`` ports of gunicorn (sync workers) and nginx in front of it."""
    app_port, http_port, https_port = free_port(), free_port(), free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webapp.wsgi",
                "--bind",
                f"127.0.0.1:{app_port}",
                "--workers",
                str(workers),
                "--timeout",
                "120",
            ],
            cwd=ROOT,
            env=env,
            stdout=(work / "gunicorn.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
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
            str(work / "tls.key"),
            "-out",
            str(work / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    config = nginx_config(work, app_port, http_port, https_port)
    processes.append(
        subprocess.Popen(
            [nginx, "-c", str(config), "-e", str(work / "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(work / "nginx.out").open("wb"),
            start_new_session=True,
        )
    )
    try:
        wait_for_port(app_port)
        wait_for_port(https_port)
        yield {"app": app_port, "http": http_port, "https": https_port}
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
