"""Monotonic counts for ``/metrics`` of what the service did where no row records it one by one.

Orphaned files removed, originals purged by the schedule, pool processes
found dead: each is a name in ``ServiceCounter``. ``add`` is a single
``UPDATE … SET value = value + n`` (the row created on first use), so
concurrent processes never lose an increment.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from screening.models import ServiceCounter

ORPHAN_FILES_REMOVED = "orphan_files_removed"
ORPHAN_BYTES_REMOVED = "orphan_bytes_removed"
RETENTION_FILES_REMOVED = "retention_files_removed"
RETENTION_STUDIES_PURGED = "retention_studies_purged"
POOL_PROCESSES_LOST = "pool_processes_lost"
POOL_PROCESS_STARTS = "pool_process_starts"

DESCRIPTIONS = {
    ORPHAN_FILES_REMOVED: "Stored files (originals, previews, unfinished writes) that no study referred to, removed.",
    ORPHAN_BYTES_REMOVED: "Bytes of those orphaned files.",
    RETENTION_FILES_REMOVED: "Original files removed by the retention purge (scheduled or manual).",
    RETENTION_STUDIES_PURGED: "Studies whose original was purged by the retention purge.",
    POOL_PROCESSES_LOST: "Warm worker pool processes found dead by their worker's main process.",
    POOL_PROCESS_STARTS: "Worker pool processes started (a rise beyond the pool size is a restart).",
}


def add(name: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name`` (creating it at ``n``)."""
    if n <= 0:
        return
    if ServiceCounter.objects.filter(name=name).update(value=F("value") + n):
        return
    try:
        with transaction.atomic():
            ServiceCounter.objects.create(name=name, value=n)
    except IntegrityError:  # another process created it first
        ServiceCounter.objects.filter(name=name).update(value=F("value") + n)


def values() -> dict[str, int]:
    """Every known counter, 0 for those never incremented."""
    stored = dict(ServiceCounter.objects.values_list("name", "value"))
    return {name: stored.get(name, 0) for name in DESCRIPTIONS}


class CountersCollector:
    """A ``prometheus_client`` collector: one ``screening_<name>_total`` counter per entry of ``DESCRIPTIONS``."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        for name, value in values().items():
            yield CounterMetricFamily(f"screening_{name}", DESCRIPTIONS[name], value=value)
