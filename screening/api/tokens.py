"""Per-user API tokens: ``Authorization: Token <key>`` (or ``Bearer <key>``).

Only a SHA-256 of each key is stored, so a database dump does not hand out
working keys; the key itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets

from django.db.models import F
from django.utils import timezone

from screening.models import ApiToken

_SCHEMES = ("token", "bearer")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_token(user) -> str:
    key = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, key_hash=_hash(key), prefix=key[:8])
    return key


def token_for_request(request) -> ApiToken | None:
    """The token the request carries, if it is a real one of an active user."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in _SCHEMES or not key.strip():
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key.strip())).first()
    if token is None or not token.user.is_active:
        return None
    return token


def user_for_request(request):
    """The active user whose token the request carries, or None."""
    token = token_for_request(request)
    return None if token is None else token.user


def record_use(token: ApiToken) -> int:
    """Note one request on ``token``; return how many it made in the current minute, this one included.

    One conditional UPDATE per request, shared by every web process (the
    database holds the count); two requests that open a new minute at the same
    instant may both start it at 1, which only ever undercounts by one.
    """
    now = timezone.now()
    window = now.replace(second=0, microsecond=0)
    same_minute = ApiToken.objects.filter(pk=token.pk, window_started_at=window).update(
        window_requests=F("window_requests") + 1, last_used_at=now
    )
    if not same_minute:
        ApiToken.objects.filter(pk=token.pk).update(window_started_at=window, window_requests=1, last_used_at=now)
        return 1
    return ApiToken.objects.values_list("window_requests", flat=True).get(pk=token.pk)


def seconds_to_next_window() -> int:
    return 60 - timezone.now().second
