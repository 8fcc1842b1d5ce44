"""Per-user API tokens: ``Authorization: Token <key>`` (or ``Bearer <key>``).

Only a SHA-256 of each key is stored, so a database dump does not hand out
working keys; the key itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from screening.models import ApiToken

_SCHEMES = ("token", "bearer")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_token(user) -> str:
    key = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, key_hash=_hash(key), prefix=key[:8])
    return key


def user_for_request(request):
    """The active user whose token the request carries, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in _SCHEMES or not key.strip():
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key.strip())).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
