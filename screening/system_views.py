"""Operator views: Prometheus ``/metrics`` and the staff "System" page (``screening.operations``)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from screening import monitoring, operations


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
    registry.register(monitoring.MonitoringCollector())
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
            "monitoring_alerts": monitoring.alert_titles(),
        },
    )


CHART_WIDTH, CHART_HEIGHT = 360, 160


def _polyline(values: list[float | None], top: float = 1.0) -> dict:
    """``values`` spread across the chart (gaps skipped), 0 at the bottom and ``top`` at the top.

    ``points`` for an SVG polyline, ``dots`` to mark each value (a single month shows as a dot).
    """
    step = CHART_WIDTH / max(len(values) - 1, 1)
    dots = [
        (f"{i * step:.1f}", f"{CHART_HEIGHT * (1 - min(v, top) / top):.1f}")
        for i, v in enumerate(values)
        if v is not None
    ]
    return {"points": " ".join(f"{x},{y}" for x, y in dots), "dots": dots}


def _level(value: float, top: float = 1.0) -> str:
    return f"{CHART_HEIGHT * (1 - min(value, top) / top):.1f}"


@staff_member_required
def monitoring_page(request):
    """The model watched in use: agreement with the reviewers, score drift and the shares of unusual outcomes."""
    report = monitoring.check()
    rates_top = max([0.2] + [row[k] or 0 for row in report.daily for k in ("outside_share", "rejected_share")])
    bars = [
        {
            "x": f"{i * CHART_WIDTH / 10:.1f}",
            "reference": _level(ref),
            "reference_h": f"{CHART_HEIGHT - float(_level(ref)):.1f}",
            "recent": _level(cur),
            "recent_h": f"{CHART_HEIGHT - float(_level(cur)):.1f}",
            "label": f"{i / 10:.1f}–{(i + 1) / 10:.1f}",
        }
        for i, (ref, cur) in enumerate(zip(report.reference_shares, report.score_shares, strict=False))
    ]
    return render(
        request,
        "screening/monitoring.html",
        {
            "report": report,
            "figures": list(report.figures.values()),
            "monitoring_alerts": [f.title for f in report.alerts],
            "window": settings.MONITORING_WINDOW,
            "min_cases": settings.MONITORING_MIN_CASES,
            "width": CHART_WIDTH,
            "height": CHART_HEIGHT,
            "agreement_lines": {
                key: _polyline([row[key] for row in report.monthly]) for key in ("sensitivity", "specificity", "ppv")
            },
            "sensitivity_band": _level(settings.MONITORING_MIN_SENSITIVITY),
            "rate_lines": {
                key: _polyline([row[key] for row in report.daily], rates_top)
                for key in ("outside_share", "rejected_share", "failed_share")
            },
            "rates_top": rates_top,
            "outside_band": _level(settings.MONITORING_MAX_OUTSIDE_SHARE, rates_top),
            "bars": bars,
        },
    )
