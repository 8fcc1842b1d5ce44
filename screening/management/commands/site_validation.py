"""Validate the served model on a site's labelled studies, from the command line.

    manage.py site_validation DIR --user admin --wait          # DIR/NORMAL, DIR/PNEUMONIA
    manage.py site_validation --reviewed --user admin          # studies radiologists already read
    manage.py site_validation --adopt ID --sensitivity 0.95 --user admin [--prevalence 0.3]

Prints the report (JSON with --json). The studies run through the normal
queue, so a worker must be running for labelled folders.
"""

import json
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from screening.governance import site_validation
from screening.intake.acceptance import folder_sources
from screening.intake.storage import StorageUnavailable
from screening.models import Batch, SiteValidation


class Command(BaseCommand):
    help = "Measure the served model on labelled studies (NORMAL/ and PNEUMONIA/ folders) or reviewed studies."

    def add_arguments(self, parser):
        parser.add_argument("directory", nargs="?", help="Folder with NORMAL/ and PNEUMONIA/ subfolders.")
        parser.add_argument("--reviewed", action="store_true", help="Use the studies radiologists have reviewed.")
        parser.add_argument("--adopt", type=int, metavar="ID", help="Adopt an operating point from validation ID.")
        parser.add_argument("--sensitivity", type=float, default=0.95, help="Target sensitivity for --adopt.")
        parser.add_argument("--prevalence", type=float, default=None, help="Site prevalence for --adopt.")
        parser.add_argument("--user", default="admin", help="Administrator account (default: admin).")
        parser.add_argument("--wait", action="store_true", help="Wait for every case, then print the report.")
        parser.add_argument("--timeout", type=float, default=3600)
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, directory, reviewed, adopt, sensitivity, prevalence, user, wait, timeout, as_json, **_):
        account = get_user_model().objects.filter(username=user, is_active=True).first()
        if account is None or not account.has_perm("screening.validate_site"):
            raise CommandError(f"{user!r} is not an active administrator allowed to validate the site.")
        if adopt is not None:
            validation = SiteValidation.objects.filter(pk=adopt).first()
            if validation is None:
                raise CommandError(f"No site validation {adopt}.")
            try:
                setting = site_validation.adopt(
                    validation, account, target_sensitivity=sensitivity, prevalence=prevalence
                )
            except site_validation.AdoptionRefused as exc:
                raise CommandError(f"Not adopted: {exc}") from None
            self.stdout.write(f"Adopted for model {setting.model_version}: threshold {setting.threshold:.4f}.")
            return
        if bool(directory) == reviewed:
            raise CommandError("Give either a folder of labelled files or --reviewed.")
        try:
            if reviewed:
                validation = site_validation.from_reviewed_studies(account)
            else:
                root = Path(directory)
                if not root.is_dir():
                    raise CommandError(f"{directory} is not a folder.")
                validation = site_validation.from_labelled_files(
                    account, folder_sources(root), name=root.name, source=Batch.Source.CLI
                )
        except (site_validation.ValidationRefused, StorageUnavailable) as exc:
            raise CommandError(str(exc)) from None
        deadline = time.monotonic() + timeout
        while wait and site_validation.refresh(validation).report is None:
            if time.monotonic() > deadline:
                raise CommandError(f"Timed out; site validation {validation.pk} is still running.")
            time.sleep(1)
        self._print(site_validation.refresh(validation), as_json)

    def _print(self, validation: SiteValidation, as_json: bool) -> None:
        report = validation.report
        if as_json:
            self.stdout.write(json.dumps({"validation": validation.pk, "report": report}))
        elif report is None:
            done, total = site_validation.progress(validation)
            self.stdout.write(f"Site validation {validation.pk}: {done} of {total} cases finished.")
        else:
            self.stdout.write(
                f"Site validation {validation.pk} of model {validation.model_version}: {report['message']}"
            )
