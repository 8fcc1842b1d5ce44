"""Operator views: Prometheus ``/metrics`` and the staff "System" page (``screening.operations``)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from screening import operations


def _has_metrics_token(request) -> bool:
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def metrics(request):
    """Prometheus text format, for a scraper holding ``METRICS_TOKEN`` or a logged-in staff member."""
    if not (_has_metrics_token(request) or (request.user.is_authenticated and request.user.is_staff)):
        response = JsonResponse(
            {"code": "authentication_required", "error": _("Send 'Authorization: Bearer <METRICS_TOKEN>'.")},
            status=401,
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(operations.SnapshotCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@staff_member_required
def system(request):
    snapshot = operations.snapshot()
    return render(
        request,
        "screening/system.html",
        {
            "s": snapshot,
            "stale_after": 3 * settings.SCREENING_HEARTBEAT_SECONDS,
            "results": sorted(snapshot.results_by_model.items()),
        },
    )
