"""Operator views: Prometheus ``/metrics`` and the staff "System" page (``screening.operations``)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from screening import counters, operations
from screening.governance import monitoring


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
    registry.register(counters.CountersCollector())
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
BLUE, GREEN, BROWN, RED = "#1f5fa8", "#2a8a3a", "#8a5a00", "#a12222"


def _height(value: float, top: float = 1.0) -> float:
    """How far ``value`` rises from the chart's floor, where ``top`` reaches its ceiling."""
    return CHART_HEIGHT * min(value, top) / top


def _y(value: float, top: float = 1.0) -> str:
    """SVG's y (it grows downwards) of ``value``."""
    return f"{CHART_HEIGHT - _height(value, top):.1f}"


def _line(line_id: str, colour: str, values: list[float | None], top: float = 1.0) -> dict:
    """``values`` spread across the chart (gaps skipped): ``points`` for a polyline, ``dots`` to mark each value
    (a single month shows as a dot)."""
    step = CHART_WIDTH / max(len(values) - 1, 1)
    dots = [(f"{i * step:.1f}", _y(v, top)) for i, v in enumerate(values) if v is not None]
    return {"id": line_id, "colour": colour, "points": " ".join(f"{x},{y}" for x, y in dots), "dots": dots}


@staff_member_required
def monitoring_page(request):
    """The model watched in use: agreement with the reviewers, score drift and the shares of unusual outcomes."""
    report = monitoring.check()
    monthly, daily = report.monthly, report.daily
    rates_top = max([0.2] + [row[k] or 0 for row in daily for k in ("outside_share", "rejected_share")])
    agreement_chart = {
        "label": _("Agreement per month"),
        "band": _y(settings.MONITORING_MIN_SENSITIVITY),
        "top": 1,
        "lines": [
            _line(f"agreement-{key}", colour, [row[key] for row in monthly])
            for key, colour in (("sensitivity", BLUE), ("specificity", GREEN), ("ppv", BROWN))
        ],
    }
    rates_chart = {
        "label": _("Shares per day"),
        "band": _y(settings.MONITORING_MAX_OUTSIDE_SHARE, rates_top),
        "top": rates_top,
        "lines": [
            _line(f"daily-{name}", colour, [row[f"{name}_share"] for row in daily], rates_top)
            for name, colour in (("outside", BLUE), ("rejected", BROWN), ("failed", RED))
        ],
    }
    bars = [
        {
            "x": f"{i * CHART_WIDTH / 10:.1f}",
            "reference_y": _y(ref),
            "reference_h": f"{_height(ref):.1f}",
            "recent_y": _y(cur),
            "recent_h": f"{_height(cur):.1f}",
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
            "agreement_chart": agreement_chart,
            "rates_chart": rates_chart,
            "bars": bars,
        },
    )
