"""App configurations of installed apps that need a word of ours."""

from axes.apps import AppConfig as AxesAppConfig
from django.utils.translation import gettext_lazy as _


class AxesConfig(AxesAppConfig):
    """django-axes (the login lockout) as itself, with a name people can read in the admin (it has none: "Axes").

    Its model and field names are translated through ``webapp.third_party_strings``.
    """

    verbose_name = _("Login lockout")
