"""Remove original files (patient data) of finished studies past a retention period; keep everything else.

    manage.py purge --older-than 90 [--dry-run]

Results, reviews, heatmaps and the audit trail stay; the study page then says
the original was removed. The run is recorded in the audit trail.
"""

from django.core.management.base import BaseCommand, CommandError

from screening.intake.retention import purge_originals


class Command(BaseCommand):
    help = "Remove original files of finished studies older than --older-than days (results and reviews stay)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS", dest="days")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be removed; remove nothing.")

    def handle(self, *args, days, dry_run, **options):
        try:
            outcome = purge_originals(days, dry_run=dry_run)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(
            f"{verb} {outcome.files} original files ({outcome.bytes / 1e6:.1f} MB) of {outcome.studies} studies "
            f"older than {days} days."
        )
