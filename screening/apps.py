from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _sync_roles(sender, **kwargs) -> None:
    # After every migrate (and after a test flush, which empties the tables
    # but re-runs post_migrate), the role groups hold exactly their permissions.
    from django.contrib.auth.models import Group, Permission

    from screening.roles import sync_role_groups

    sync_role_groups(Group, Permission)


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = _("Screening")

    def ready(self) -> None:
        from screening import signals  # noqa: F401  (connects login/logout auditing)

        post_migrate.connect(_sync_roles, sender=self)
