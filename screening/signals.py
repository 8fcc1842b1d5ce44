"""Audit logins, logouts and admin changes, wherever they happen."""

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from screening import audit
from screening.models import AuditEvent


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs):
    audit.record(AuditEvent.Action.LOGIN, actor=user)


@receiver(user_logged_out)
def audit_logout(sender, request, user, **kwargs):
    if user is not None:
        audit.record(AuditEvent.Action.LOGOUT, actor=user)


@receiver(user_login_failed)
def audit_login_failed(sender, credentials, request=None, **kwargs):
    # Only the username that was tried: never the password.
    audit.record(AuditEvent.Action.LOGIN_FAILED, username=str(credentials.get("username", ""))[:150])


@receiver(post_save, sender=LogEntry)
def audit_admin_change(sender, instance: LogEntry, created: bool, **kwargs):
    """Every add, change or delete made in the Django admin also lands in our audit trail."""
    if created:
        audit.record(
            AuditEvent.Action.ADMIN_CHANGE,
            actor=instance.user,
            kind={ADDITION: "add", CHANGE: "change", DELETION: "delete"}.get(instance.action_flag, "other"),
            model=instance.content_type.model if instance.content_type_id else "",
            object_id=instance.object_id or "",
            object=instance.object_repr[:200],
            change=instance.get_change_message()[:500],
        )
