from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from screening import audit
from screening.api import tokens
from screening.models import AuditEvent


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        key = tokens.create_token(user)
        audit.record(AuditEvent.Action.TOKEN_CREATED, actor=user, via="create_api_token")
        self.stdout.write(key)
