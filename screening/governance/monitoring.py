"""Watching the model in use: does it keep agreeing with the radiologists, and does it see what it was made for?

A site validation measures the model once. This module measures it every day
from what the service already records, and says when a figure leaves the band
the site set for it (``MONITORING_*`` settings):

- **agreement** of the model's label with the reviewer's finding, over the
  last ``MONITORING_WINDOW`` reviewed studies of the validated population
  (sensitivity, specificity and PPV with exact 95 % CIs) and per month;
- **score drift**: the population stability index of the last window's scores
  against a reference: the scores of the validation the site adopted its
  operating point from, else the model card's own validation split
  (``ml.evaluation.score_reference``). A change in the share of pneumonia
  moves it too; the page says so;
- the shares **outside the validated population**, **rejected by the gate**
  and **failed**, over the last window of finished studies and per day.

Only clinical studies count (site-validation films are test cases). A figure
with fewer than ``MONITORING_MIN_CASES`` cases behind it is shown but never
raises an alert. ``check()`` records each figure leaving or re-entering its
band in the audit trail and keeps the current alerts in ``ServiceState``,
which the banner on the System page and the worklist reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncDay
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from screening import audit
from screening.models import AuditEvent, Batch, Result, Review, ServiceState, Study
from screening.selectors import current_site_setting
from screening.served_model import current_model_version, model_card

ALERTS_KEY = "monitoring_alerts"
DAYS_SHOWN = 30
MONTHS_SHOWN = 12
PSI_FLOOR = 1e-4  # an empty bin's share, so that the logarithm stays finite

TITLES = {
    "sensitivity": _("Agreement: sensitivity"),
    "specificity": _("Agreement: specificity"),
    "ppv": _("Agreement: PPV"),
    "score_psi": _("Score drift (PSI)"),
    "outside_share": _("Outside the validated population"),
    "rejected_share": _("Rejected by the gate"),
    "failed_share": _("Failed"),
}


@dataclass
class Figure:
    key: str
    value: float | None
    n: int  # cases behind it
    low: float | None = None  # band: an alert below ``low`` or above ``high``
    high: float | None = None
    ci: tuple[float, float] | None = None

    @property
    def title(self) -> str:
        return str(TITLES[self.key])

    @property
    def judged(self) -> bool:
        return self.value is not None and self.n >= settings.MONITORING_MIN_CASES

    @property
    def out_of_band(self) -> bool:
        if not self.judged:
            return False
        return (self.low is not None and self.value < self.low) or (self.high is not None and self.value > self.high)


@dataclass
class Report:
    figures: dict[str, Figure]
    reference: str  # what the score distribution is compared with
    monthly: list[dict] = field(default_factory=list)  # {"month", "n", "sensitivity", "specificity", "ppv"}
    daily: list[dict] = field(default_factory=list)  # {"day", "finished", "outside_share", "rejected_share", ...}
    score_shares: list[float] = field(default_factory=list)
    reference_shares: list[float] = field(default_factory=list)

    @property
    def alerts(self) -> list[Figure]:
        return [f for f in self.figures.values() if f.out_of_band]


def clinical_studies():
    return Study.objects.filter(batch__kind=Batch.Kind.CLINICAL)


def _latest_read(limit: int | None, since=None) -> list[tuple[str, bool, object]]:
    """(model label, reviewer says pneumonia, when) for the latest normal/pneumonia review of each study.

    Only clinical studies of the validated population whose review recorded
    the result it was made against: an "outside" score is not a claim.
    """
    reviews = (
        Review.objects.filter(
            study__batch__kind=Batch.Kind.CLINICAL,
            result__isnull=False,
            study__review_status=Study.ReviewStatus.REVIEWED,
        )
        .exclude(study__population=Study.Population.OUTSIDE)
        .order_by("-created_at", "-pk")
        .values_list("study_id", "finding", "result__label", "created_at")
    )
    if since is not None:
        reviews = reviews.filter(created_at__gte=since)
    seen, reads = set(), []
    for study_id, finding, label, created in reviews.iterator():
        if study_id in seen:
            continue
        seen.add(study_id)
        if finding in (Review.Finding.NORMAL, Review.Finding.PNEUMONIA):
            reads.append((label, finding == Review.Finding.PNEUMONIA, created))
            if limit is not None and len(reads) >= limit:
                break
    return reads


def agreement(reads: list[tuple[str, bool, object]]) -> dict[str, tuple[float | None, int, tuple | None]]:
    """Sensitivity, specificity and PPV of the model's label against the reviewers: (value, n, exact CI)."""
    from ml.statistics.intervals import clopper_pearson
    from ml.statistics.metrics import confusion

    said = np.array([label == Result.Label.PNEUMONIA for label, _, _ in reads], dtype=bool)
    truth = np.array([pneumonia for _, pneumonia, _ in reads], dtype=bool)
    counts = confusion(truth, said)
    tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]

    def rate(k: int, n: int):
        return (k / n if n else None, n, clopper_pearson(k, n) if n else None)

    return {"sensitivity": rate(tp, tp + fn), "specificity": rate(tn, tn + fp), "ppv": rate(tp, tp + fp)}


def psi(actual: list[float], expected: list[float]) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected)."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def score_reference() -> tuple[list[float], str]:
    """The reference score shares and what they are: the adopted validation's, else the card's."""
    from ml.statistics.metrics import shares

    version = current_model_version()
    setting = current_site_setting(version)
    if setting is not None:
        # The cases the adopted report counted: linked duplicates' results included, training images left out.
        from screening.governance.site_validation import gather_evidence

        scores = [result.probability for _, result in gather_evidence(setting.validation).independent]
        if scores:
            what = _("the %(n)d scored cases of site validation %(id)d, adopted on %(when)s") % {
                "n": len(scores),
                "id": setting.validation_id,
                "when": setting.created_at.date().isoformat(),
            }
            return shares(scores), str(what)
    reference = model_card().get("score_reference")
    if not reference:
        return [], str(_("none: the model card has no score reference"))
    what = _("the model's validation split (%(n)d images, %(pneumonia)s %% pneumonia)") % {
        "n": reference["n"],
        "pneumonia": round(100 * float(model_card().get("calibration_prevalence", float("nan")))),
    }
    return reference["shares"], str(what)


def compute(now=None, series: bool = True) -> Report:
    """Every figure over the latest window; with ``series``, the monthly and daily rows the page draws too."""
    from ml.statistics.metrics import shares

    now = now or timezone.now()
    window = settings.MONITORING_WINDOW
    figures: dict[str, Figure] = {}
    bands = {
        "sensitivity": (settings.MONITORING_MIN_SENSITIVITY, None),
        "specificity": (settings.MONITORING_MIN_SPECIFICITY, None),
        "ppv": (settings.MONITORING_MIN_PPV, None),
    }
    for key, (value, n, ci) in agreement(_latest_read(window)).items():
        figures[key] = Figure(key, value, n, *bands[key], ci=ci)

    recent_scores = list(
        clinical_studies()
        .filter(status=Study.Status.DONE, score__isnull=False)
        .order_by("-finished_at", "-pk")
        .values_list("score", flat=True)[:window]
    )
    reference, what = score_reference()
    score_shares = shares(recent_scores) if recent_scores else []
    drift = psi(score_shares, reference) if recent_scores and reference else None
    figures["score_psi"] = Figure("score_psi", drift, len(recent_scores), None, settings.MONITORING_MAX_PSI)

    finished = list(
        clinical_studies()
        .filter(status__in=Study.FINISHED)
        .order_by("-finished_at", "-pk")
        .values_list("status", "population")[:window]
    )
    done = [population for status, population in finished if status == Study.Status.DONE]
    statuses = [status for status, _ in finished]
    figures["outside_share"] = Figure(
        "outside_share",
        done.count(Study.Population.OUTSIDE) / len(done) if done else None,
        len(done),
        None,
        settings.MONITORING_MAX_OUTSIDE_SHARE,
    )
    for key, status, limit in (
        ("rejected_share", Study.Status.REJECTED, settings.MONITORING_MAX_REJECTED_SHARE),
        ("failed_share", Study.Status.FAILED, settings.MONITORING_MAX_FAILED_SHARE),
    ):
        share = statuses.count(status) / len(statuses) if statuses else None
        figures[key] = Figure(key, share, len(statuses), None, limit)

    return Report(
        figures=figures,
        reference=what,
        monthly=_monthly(now) if series else [],
        daily=_daily(now) if series else [],
        score_shares=score_shares,
        reference_shares=list(reference),
    )


def _monthly(now) -> list[dict]:
    reads = _latest_read(None, since=now - timedelta(days=31 * MONTHS_SHOWN))
    months: dict[str, list] = {}
    for read in reads:
        months.setdefault(timezone.localtime(read[2]).strftime("%Y-%m"), []).append(read)
    rows = []
    for month in sorted(months):
        figures = agreement(months[month])
        rows.append({"month": month, "n": len(months[month]), **{k: v[0] for k, v in figures.items()}})
    return rows


def _daily(now) -> list[dict]:
    since = now - timedelta(days=DAYS_SHOWN)
    rows = (
        clinical_studies()
        .filter(status__in=Study.FINISHED, finished_at__gte=since)
        .annotate(day=TruncDay("finished_at"))
        .values("day")
        .annotate(
            finished=Count("pk"),
            done=Count("pk", filter=Q(status=Study.Status.DONE)),
            outside=Count("pk", filter=Q(status=Study.Status.DONE, population=Study.Population.OUTSIDE)),
            rejected=Count("pk", filter=Q(status=Study.Status.REJECTED)),
            failed=Count("pk", filter=Q(status=Study.Status.FAILED)),
        )
        .order_by("day")
    )
    return [
        {
            "day": row["day"].date().isoformat(),
            "finished": row["finished"],
            "outside_share": row["outside"] / row["done"] if row["done"] else None,
            "rejected_share": row["rejected"] / row["finished"],
            "failed_share": row["failed"] / row["finished"],
        }
        for row in rows
    ]


def current_alerts() -> list[str]:
    """The figures out of band at the last check (cheap: one row), for the banner."""
    state = ServiceState.objects.filter(key=ALERTS_KEY).values_list("value", flat=True).first()
    return json.loads(state) if state else []


def check(report: Report | None = None, series: bool = True) -> Report:
    """Compute the figures and audit every one that left or re-entered its band since the last check."""
    report = report or compute(series=series)
    now_out = sorted(f.key for f in report.alerts)
    with transaction.atomic():
        state, _created = ServiceState.objects.select_for_update().get_or_create(
            key=ALERTS_KEY, defaults={"value": "[]"}
        )
        before = json.loads(state.value)
        for key in sorted(set(now_out) - set(before)):
            figure = report.figures[key]
            audit.record(
                AuditEvent.Action.MONITORING_ALERT,
                figure=key,
                value=_finite(figure.value),
                n=figure.n,
                low=figure.low,
                high=figure.high,
            )
        for key in sorted(set(before) - set(now_out)):
            figure = report.figures.get(key)
            audit.record(
                AuditEvent.Action.MONITORING_CLEARED,
                figure=key,
                value=_finite(figure.value) if figure else None,
                n=figure.n if figure else 0,
            )
        if now_out != before:
            state.value = json.dumps(now_out)
            state.save(update_fields=["value", "updated_at"])
    return report


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def alert_titles() -> list[str]:
    """The banner's words: the titles of the figures out of band at the last check."""
    alerts = set(current_alerts())
    return [str(title) for key, title in TITLES.items() if key in alerts]


class MonitoringCollector:
    """Prometheus gauges of the monitored figures, their bands and whether each is out of band."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        report = compute(series=False)  # a scrape needs the figures, not the page's time series
        families = {
            "value": GaugeMetricFamily(
                "screening_monitoring_value",
                "A figure watched in use (screening.governance.monitoring).",
                labels=["figure"],
            ),
            "cases": GaugeMetricFamily("screening_monitoring_cases", "Cases behind each figure.", labels=["figure"]),
            "low": GaugeMetricFamily("screening_monitoring_band_low", "Each figure's lower bound.", labels=["figure"]),
            "high": GaugeMetricFamily(
                "screening_monitoring_band_high", "Each figure's upper bound.", labels=["figure"]
            ),
            "out": GaugeMetricFamily(
                "screening_monitoring_out_of_band",
                "1 when a figure with enough cases behind it is outside its band.",
                labels=["figure"],
            ),
        }
        for key, figure in report.figures.items():
            if figure.value is not None:
                families["value"].add_metric([key], figure.value)
            families["cases"].add_metric([key], figure.n)
            if figure.low is not None:
                families["low"].add_metric([key], figure.low)
            if figure.high is not None:
                families["high"].add_metric([key], figure.high)
            families["out"].add_metric([key], 1.0 if figure.out_of_band else 0.0)
        yield from families.values()
