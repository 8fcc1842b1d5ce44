"""The one way to write the audit trail.

Callers name the action and the object; the actor's username is copied at the
time so the trail still reads correctly after an account is renamed.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from screening.models import AuditEvent


def record(action: str, *, actor=None, obj: models.Model | None = None, **details: Any) -> AuditEvent:
    user = actor if actor is not None and actor.is_authenticated else None
    return AuditEvent.objects.create(
        action=action,
        actor=user,
        actor_username=user.get_username() if user else "",
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        details=details,
    )
