"""What an operator needs to see at a glance: the queue, its age, the workers, results and failures.

One snapshot, read from the database (the source of truth, and the same in
every web process, so nothing has to be aggregated across gunicorn workers),
served two ways: Prometheus text at ``/metrics`` and the staff "System" page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Avg, Count, F, Min
from django.utils import timezone

from screening.models import Delivery, ReceivedInstance, Result, Study, WorkerHeartbeat

RECENT = timedelta(minutes=5)
TOP_FAILURE_REASONS = 20


@dataclass
class Snapshot:
    studies_by_status: dict[str, int]
    oldest_waiting_seconds: dict[str, float]  # per unfinished status; 0 when none waits
    results_by_model: dict[tuple[str, str], int]  # (model version, label) -> results
    population: dict[str, int]  # DONE studies per verdict ("" = scored before verdicts)
    recent_finished: int
    recent_seconds_per_study: float | None  # started -> finished, mean over the last 5 minutes
    recent_model_ms_per_study: float | None
    failures: list[tuple[str, str, int]] = field(default_factory=list)  # (status, reason, studies)
    heartbeats: dict[str, float] = field(default_factory=dict)  # worker -> seconds since its heartbeat
    # DICOM results going back to PACS: (destination, status) -> deliveries, and the oldest pending one's age
    # per destination (a destination down shows as a growing age long before anything is marked failed).
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_pending_delivery_seconds: dict[str, float] = field(default_factory=dict)
    received_by_caller: dict[str, int] = field(default_factory=dict)  # DICOM instances received, per calling AE


def snapshot() -> Snapshot:
    now = timezone.now()
    by_status = dict(Study.objects.values_list("status").annotate(n=Count("pk")).order_by())
    oldest = {}
    for status, since in (
        (Study.Status.RECEIVED, "created_at"),
        (Study.Status.QUEUED, "queued_at"),
        (Study.Status.RUNNING, "started_at"),
    ):
        first = Study.objects.filter(status=status).aggregate(first=Min(since))["first"]
        oldest[status.value] = (now - first).total_seconds() if first else 0.0
    recent = Study.objects.filter(status=Study.Status.DONE, finished_at__gte=now - RECENT, started_at__isnull=False)
    timing = recent.aggregate(n=Count("pk"), mean=Avg(F("finished_at") - F("started_at")))
    model_ms = Result.objects.filter(created_at__gte=now - RECENT).aggregate(mean=Avg("inference_ms"))["mean"]
    failures = (
        Study.objects.filter(status__in=[Study.Status.FAILED, Study.Status.REJECTED])
        .values_list("status", "status_message")
        .annotate(n=Count("pk"))
        .order_by("-n")[:TOP_FAILURE_REASONS]
    )
    return Snapshot(
        studies_by_status={status.value: by_status.get(status.value, 0) for status in Study.Status},
        oldest_waiting_seconds=oldest,
        results_by_model={
            (version, label): n
            for version, label, n in Result.objects.values_list("model_version", "label").annotate(n=Count("pk"))
        },
        population=dict(
            Study.objects.filter(status=Study.Status.DONE).values_list("population").annotate(n=Count("pk")).order_by()
        ),
        recent_finished=timing["n"],
        recent_seconds_per_study=timing["mean"].total_seconds() if timing["mean"] is not None else None,
        recent_model_ms_per_study=model_ms,
        failures=[(status, (reason or "")[:120], n) for status, reason, n in failures],
        heartbeats={
            hostname: (now - seen).total_seconds()
            for hostname, seen in WorkerHeartbeat.objects.values_list("hostname", "seen_at")
        },
        deliveries={
            (destination, status): n
            for destination, status, n in Delivery.objects.values_list("destination", "status")
            .annotate(n=Count("pk"))
            .order_by()
        },
        received_by_caller=dict(ReceivedInstance.objects.values_list("calling_ae").annotate(n=Count("pk")).order_by()),
        oldest_pending_delivery_seconds={
            destination: (now - first).total_seconds()
            for destination, first in Delivery.objects.filter(status=Delivery.Status.PENDING)
            .values_list("destination")
            .annotate(first=Min("created_at"))
            .order_by()
        },
    )


def _labelled(family, name: str, documentation: str, labels: list[str], values: dict):
    """One metric family with a sample per key of ``values`` (a label value, or a tuple of them)."""
    metric = family(name, documentation, labels=labels)
    for key, value in values.items():
        metric.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return metric


class SnapshotCollector:
    """A ``prometheus_client`` collector that reads one snapshot per scrape."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = snapshot()
        failures: dict[tuple[str, str], int] = {}
        for status, reason, n in s.failures:  # reasons cut to 120 characters may coincide: one sample each
            failures[status, reason] = failures.get((status, reason), 0) + n
        yield _labelled(GaugeMetricFamily, "screening_studies", "Studies by status.", ["status"], s.studies_by_status)
        yield _labelled(
            GaugeMetricFamily,
            "screening_oldest_waiting_seconds",
            "Age of the oldest study in each unfinished status.",
            ["status"],
            s.oldest_waiting_seconds,
        )
        yield _labelled(
            CounterMetricFamily,
            "screening_results",
            "Results written, by model version and label.",
            ["model_version", "label"],
            s.results_by_model,
        )
        yield _labelled(
            GaugeMetricFamily,
            "screening_scored_studies_by_population",
            "DONE studies by population verdict.",
            ["population"],
            {verdict or "none": n for verdict, n in s.population.items()},
        )
        yield GaugeMetricFamily(
            "screening_recent_study_seconds",
            "Mean seconds from claim to result over the last 5 minutes (NaN when none finished).",
            value=float("nan") if s.recent_seconds_per_study is None else s.recent_seconds_per_study,
        )
        yield GaugeMetricFamily(
            "screening_recent_model_milliseconds",
            "Mean model time per study over the last 5 minutes (NaN when none).",
            value=float("nan") if s.recent_model_ms_per_study is None else s.recent_model_ms_per_study,
        )
        yield _labelled(
            GaugeMetricFamily,
            "screening_unscored_studies",
            "FAILED and REJECTED studies by reason (top 20).",
            ["status", "reason"],
            failures,
        )
        yield _labelled(
            GaugeMetricFamily,
            "screening_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat.",
            ["worker"],
            s.heartbeats,
        )
        yield _labelled(
            GaugeMetricFamily,
            "screening_dicom_deliveries",
            "DICOM result objects by destination and status.",
            ["destination", "status"],
            s.deliveries,
        )
        yield _labelled(
            GaugeMetricFamily,
            "screening_dicom_oldest_pending_seconds",
            "Age of the oldest DICOM delivery still pending, per destination.",
            ["destination"],
            s.oldest_pending_delivery_seconds,
        )
        yield _labelled(
            CounterMetricFamily,
            "screening_dicom_received_instances",
            "DICOM instances received (C-STORE by calling AE title; STOW-RS as an empty title).",
            ["calling_ae"],
            s.received_by_caller,
        )
