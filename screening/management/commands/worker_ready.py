"""Exit 0 when this host's worker has a pool process that is alive and warm, else 1: the worker's health check.

    manage.py worker_ready            # in the worker's container (docker-compose healthcheck)

``celery inspect ping`` answers from the worker's main process, which keeps
answering while every pool process is dead or still warming its models, so it
called a worker that could not score healthy. This reads the pool processes'
own heartbeats instead (``screening.liveness``).
"""

import socket

from django.core.management.base import BaseCommand, CommandError

from screening.liveness import warm_processes


class Command(BaseCommand):
    help = "Succeed only when a pool process of this host's worker is alive and warm."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Host name of the worker (default: this machine's).")

    def handle(self, *args, host, **options):
        host = host or socket.gethostname()
        count = warm_processes(host=host).count()
        if not count:
            raise CommandError(f"no warm pool process on {host}: every one is dead or still warming up")
        self.stdout.write(f"{count} warm pool process{'es' if count > 1 else ''} on {host}")
