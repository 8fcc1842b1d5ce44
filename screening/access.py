"""Who may see which batches and studies: the one place that decides.

Submitters see what they submitted; radiologists and auditors (the
``view_all_studies`` permission) see every study. Views turn "not visible"
into 404, never 403, so that ids do not reveal what exists.

Site-validation batches are no one's clinical work: their films are labelled
test cases, so no worklist, export, study page, FHIR or DICOM object shows
them. Their own pages (``screening.governance.site_views``) read them through the
validation instead.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from screening.models import Batch, Study

VIEW_ALL = "screening.view_all_studies"
SUBMIT = "screening.submit_studies"
REVIEW = "screening.review_study"


def visible_batches(user) -> QuerySet[Batch]:
    if not user.is_authenticated:
        return Batch.objects.none()
    clinical = Batch.objects.filter(kind=Batch.Kind.CLINICAL)
    if user.has_perm(VIEW_ALL):
        return clinical
    return clinical.filter(submitted_by=user)


def visible_studies(user) -> QuerySet[Study]:
    if not user.is_authenticated:
        return Study.objects.none()
    clinical = Study.objects.filter(batch__kind=Batch.Kind.CLINICAL)
    if user.has_perm(VIEW_ALL):
        return clinical
    return clinical.filter(batch__submitted_by=user)


def can_submit(user) -> bool:
    return user.is_authenticated and user.has_perm(SUBMIT)


def require(request, *permissions: str) -> None:
    """403 unless the user holds one of ``permissions``; object visibility is checked separately (404)."""
    if not any(request.user.has_perm(p) for p in permissions):
        raise PermissionDenied
