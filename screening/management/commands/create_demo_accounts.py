"""Demo accounts for a local trial run (`make run`): one per role plus an admin.

Refuses to run unless DEBUG is on or --i-know-this-is-not-production is given,
so that well-known passwords never reach a real deployment by accident.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from screening import roles

DEMO_ACCOUNTS = [
    ("submitter", roles.SUBMITTER, False),
    ("radiologist", roles.RADIOLOGIST, False),
    ("auditor", roles.AUDITOR, True),  # staff: the auditor reads the Django admin
    ("admin", None, True),
]


class Command(BaseCommand):
    help = "Create demo accounts (once) and print their credentials."

    def add_arguments(self, parser):
        parser.add_argument("--i-know-this-is-not-production", action="store_true", dest="allowed")
        parser.add_argument(
            "--credentials-file", help="Where passwords are kept between runs (default: var/demo-accounts.txt)."
        )

    def handle(self, *args, allowed, credentials_file, **options):
        if not (settings.DEBUG or allowed):
            raise CommandError("Demo accounts are for local trials: pass --i-know-this-is-not-production.")
        path = credentials_file or str(settings.VAR_DIR / "demo-accounts.txt")
        User = get_user_model()
        lines = []
        for username, role, staff in DEMO_ACCOUNTS:
            user = User.objects.filter(username=username).first()
            if user is None:
                password = secrets.token_urlsafe(9)
                user = User.objects.create_user(
                    username=username, password=password, is_staff=staff, is_superuser=role is None
                )
                if role:
                    user.groups.add(Group.objects.get(name=role))
                lines.append(f"{username:12} {password:16} {role or 'Administrator'}")
        if lines:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        with open(path, encoding="utf-8") as handle:
            self.stdout.write("Demo accounts (username, password, role), kept in " + path + ":\n" + handle.read())
