"""Benchmark: concurrent uploaders through the shipped proxy, counting every answer that is not 202.

    .venv/bin/python -m bench.load [--uploaders 50] [--seconds 60]

Runs what docker-compose runs in front of the database: ``webapp/deploy/nginx.conf``
(TLS, buffering) and gunicorn with 3 sync workers, against a fresh test
database and Redis. Each uploader has its own account and API token and posts
unique fixture X-rays to ``/api/v1/studies`` in a loop for the given time; no
worker runs, so the figures are about intake alone. Needs nginx, PostgreSQL and
Redis. Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import ssl
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from bench.figures import p50_p95  # noqa: E402
from bench.services import fresh_services  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run_uploaders(port: int, keys: list[str], seconds: float):
    """Each key's uploader posts unique fixture X-rays until ``seconds`` have passed; (answers, latencies)."""
    xray = next((ROOT / "tests" / "fixtures" / "xray" / "NORMAL").glob("*.jpeg")).read_bytes()
    answers: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    context = ssl._create_unverified_context()

    def uploader(key: str, index: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            body, content_type = multipart(f"u{index}-{n}.jpeg", xray + f"#{index}-{n}".encode())
            started = time.monotonic()
            try:
                client = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
                client.request(
                    "POST",
                    "/api/v1/studies",
                    body=body,
                    headers={
                        "Host": "localhost",
                        "Authorization": f"Token {key}",
                        "Content-Type": content_type,
                    },
                )
                status = client.getresponse().status
                client.close()
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                answers[status] += 1
                latencies.append((time.monotonic() - started) * 1000)

    threads = [threading.Thread(target=uploader, args=(key, i)) for i, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploaders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    from django.contrib.auth.models import Group, User

    from harness.proxy_stack import proxied_gunicorn
    from harness.worker_process import postgres_worker_env
    from screening import roles
    from screening.api import tokens
    from screening.models import Study

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    with fresh_services():
        keys = []
        for i in range(args.uploaders):
            user = User.objects.create_user(f"uploader-{i}", password="x")
            user.groups.add(Group.objects.get(name=roles.SUBMITTER))
            keys.append(tokens.create_token(user))
        settings.MEDIA_ROOT = work / "media"
        env = postgres_worker_env(settings, DJANGO_ALLOWED_HOSTS="localhost")
        with proxied_gunicorn(work, env, workers=3) as ports:
            time.sleep(2)
            answers, latencies = run_uploaders(ports["https"], keys, args.seconds)

        total = sum(answers.values())
        errors = total - answers.get(202, 0)
        print(f"{args.uploaders} uploaders for {args.seconds:.0f} s through nginx -> gunicorn (3 sync workers)")
        print(f"requests: {total}   accepted (202): {answers.get(202, 0)}   errors: {errors}   {dict(answers)}")
        print(f"upload latency: {p50_p95(latencies)}   ({total / args.seconds:.1f} uploads/s)")
        print(f"studies stored: {Study.objects.count()}   median {statistics.median(latencies):.0f} ms")


if __name__ == "__main__":
    main()
