"""The read side shared by pages, the API and commands: one query per question.

Writes live in their action modules (``submission``, ``review``, ``scoring``);
what several readers ask of the database lives here, so a prefetch added for
one page cannot be forgotten by the API that shows the same rows.
"""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404

from screening import access
from screening.models import Batch, Delivery, SiteSetting, Study


def studies_with_results() -> QuerySet[Study]:
    """Studies with what ``Study.latest_result`` needs, their own results or the earlier study's they link to."""
    return Study.objects.select_related("batch", "duplicate_of__batch").prefetch_related(
        "results", Prefetch("duplicate_of__results")
    )


def visible_study(user, study_id: int) -> Study:
    """A study ``user`` may see, with its results; ``Http404`` otherwise, exactly as for one that does not exist."""
    return get_object_or_404(studies_with_results().filter(pk__in=access.visible_studies(user)), pk=study_id)


def batch_studies(batch: Batch) -> QuerySet[Study]:
    return studies_with_results().filter(batch=batch).order_by("pk")


def batch_progress(batch: Batch) -> dict[str, int]:
    """Studies per status, plus ``total`` and ``finished``, in one grouped query."""
    counts = dict(batch.studies.values_list("status").annotate(n=Count("pk")).order_by())
    progress = {status.value: counts.get(status.value, 0) for status in Study.Status}
    progress["total"] = sum(counts.values())
    progress["finished"] = sum(counts.get(s, 0) for s in Study.FINISHED)
    return progress


def batches_with_counts(user, limit: int = 200) -> QuerySet[Batch]:
    """The newest batches ``user`` may see, each annotated with total, finished and failed study counts."""
    return (
        access.visible_batches(user)
        .select_related("submitted_by")
        .annotate(
            total=Count("studies"),
            finished=Count("studies", filter=Q(studies__status__in=Study.FINISHED)),
            failed=Count("studies", filter=Q(studies__status__in=[Study.Status.FAILED, Study.Status.REJECTED])),
        )
        .order_by("-created_at")[:limit]
    )


def current_site_setting(model_version: str) -> SiteSetting | None:
    """The operating point in force for ``model_version``: the newest adopted one, or None (the card's)."""
    return SiteSetting.objects.filter(model_version=model_version).order_by("-created_at", "-pk").first()


def deliveries(study: Study) -> list[Delivery]:
    """What was sent (or is being sent) to PACS for the study's results, newest result first."""
    return list(Delivery.objects.filter(result__study=study).order_by("-result__created_at", "destination", "kind"))


# Above this share of its evidence outside the lung fields, the study page warns that a flagged score may rest
# on something that is not lung. The 95th percentile over v5's flagged studies of the validation split (ml/README.md,
# "Heatmaps on the lungs"): half of them have more than 49 % outside, so a warning at half would fire on every
# other study and be ignored.
OUTSIDE_LUNGS_WARNING = 0.78


def evidence_outside_lungs(result) -> dict | None:
    """What the study page says about the map's evidence outside the lungs, or None when the model has no lung field."""
    if result is None or result.evidence_outside_lungs is None:
        return None
    share = result.evidence_outside_lungs
    return {"percent": round(100 * share), "warn": result.label == "PNEUMONIA" and share >= OUTSIDE_LUNGS_WARNING}
