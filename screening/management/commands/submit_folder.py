"""Submit every file under a folder as one batch; optionally wait and report.

With --json and --wait it prints one JSON line per file: file, status,
probability, label, population, population_reason, error. Files refused at
upload appear with status REFUSED, so the output accounts for every file in
the folder. --population adult|pediatric or --age N declares who the patients
are, for the population verdict.
"""

import json
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from screening import access
from screening.intake.acceptance import folder_sources
from screening.intake.storage import StorageUnavailable
from screening.intake.submission import NothingAccepted, submit
from screening.models import Batch, Study
from screening.population import Declaration, InvalidDeclaration
from screening.selectors import batch_studies


class Command(BaseCommand):
    help = "Submit every JPEG, PNG and DICOM file under DIR as one batch."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--user", default="submitter", help="Submitting account (default: submitter).")
        parser.add_argument("--wait", action="store_true", help="Wait until every study is finished.")
        parser.add_argument(
            "--priority",
            choices=Study.Priority.values,
            default=Study.Priority.ROUTINE,
            help="urgent: scored before routine work already queued (default: routine).",
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="One JSON line per file.")
        parser.add_argument("--timeout", type=float, default=3600, help="Seconds to wait at most (default 3600).")
        parser.add_argument(
            "--population",
            default="",
            help="Who the patients are: 'pediatric' (children in the validated age range) or 'adult'.",
        )
        parser.add_argument("--age", default=None, help="The patients' age in years, when one age holds for all.")

    def handle(self, *args, directory, user, wait, as_json, timeout, population, age, **options):
        try:
            declaration = Declaration.parse(population, age)
        except InvalidDeclaration as exc:
            raise CommandError(str(exc)) from None
        root = Path(directory)
        if not root.is_dir():
            raise CommandError(f"{directory} is not a folder.")
        account = get_user_model().objects.filter(username=user, is_active=True).first()
        if account is None:
            raise CommandError(f"No active user named {user!r}; pass --user.")
        if not access.can_submit(account):
            raise CommandError(f"User {user!r} may not submit studies (add them to the Submitter group).")
        try:
            outcome = submit(
                account,
                Batch.Source.CLI,
                folder_sources(root),
                name=root.name,
                declaration=declaration,
                priority=options["priority"],
            )
        except NothingAccepted as exc:
            self._report_refusals(exc.refusals, as_json)
            raise CommandError("No file could be accepted.") from None
        except StorageUnavailable as exc:
            raise CommandError(str(exc)) from None
        batch = outcome.batch
        if not as_json:
            self.stdout.write(
                f"Batch {batch.pk}: {len(outcome.studies)} studies accepted, {len(outcome.refusals)} refused."
            )
        if not wait:
            self._report_refusals(outcome.refusals, as_json)
            if as_json:
                for study in outcome.studies:
                    self._emit(as_json, study.original_name, study.status, study=study.pk, batch=batch.pk)
            return
        deadline = time.monotonic() + timeout
        while batch.studies.filter(status__in=Study.UNFINISHED).exists():
            if time.monotonic() > deadline:
                raise CommandError(f"Timed out after {timeout:.0f} s; batch {batch.pk} is still being processed.")
            time.sleep(1)
        self._report_refusals(outcome.refusals, as_json)
        for study in batch_studies(batch):
            result = study.latest_result()
            self._emit(
                as_json,
                study.original_name,
                study.status,
                probability=None if result is None else round(result.probability, 6),
                label=None if result is None else result.label,
                population=study.population or None,
                population_reason=study.population_reason or None,
                error=study.status_message if study.status in (Study.Status.FAILED, Study.Status.REJECTED) else None,
                study=study.pk,
                batch=batch.pk,
            )

    def _report_refusals(self, refusals, as_json):
        for refusal in refusals:
            self._emit(
                as_json,
                refusal.name,
                "REFUSED",
                probability=None,
                label=None,
                population=None,
                population_reason=None,
                error=refusal.error,
            )

    def _emit(self, as_json, file, status, **fields):
        if as_json:
            self.stdout.write(json.dumps({"file": file, "status": status, **fields}))
        else:
            extra = "  ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("batch",))
            self.stdout.write(f"{status:9} {file}  {extra}")
