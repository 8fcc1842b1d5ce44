from django.core.management.base import BaseCommand

from screening.queue import requeue_stuck_studies


class Command(BaseCommand):
    help = "Re-send studies whose queue message was lost (the worker's beat also does this periodically)."

    def handle(self, *args, **options):
        counts = requeue_stuck_studies()
        self.stdout.write(f"re-queued {counts['requeued']}, failed {counts['failed']}")
