"""The radiologists' worklist: which studies, in which order, with which filters.

Scored studies waiting for a read come first, highest model score first, so
the likeliest pneumonia is read soonest. Studies of patients outside the
population the model was validated on (adults, for the shipped model) have
their own tab: their score is shown but is not evidence, so they must never
sit among the validated positives at the top of the main lane. Studies the
model could not score (FAILED, REJECTED) have their own tab: they still need a
person.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from screening import access
from screening.models import Result, Study


@dataclass(frozen=True)
class Tab:
    slug: str
    title: str
    condition: Q
    ordering: tuple[str, ...]


# Studies scored before verdicts existed have none and stay in the main lane, as before.
_VALIDATED = ~Q(population=Study.Population.OUTSIDE)
_OUTSIDE = Q(population=Study.Population.OUTSIDE)

TABS = [
    Tab(
        "to-review",
        _("To review"),
        Q(status=Study.Status.DONE, review_status=Study.ReviewStatus.UNREVIEWED) & _VALIDATED,
        ("-score", "id"),
    ),
    Tab(
        "second-read",
        _("Second read"),
        Q(status=Study.Status.DONE, review_status=Study.ReviewStatus.SECOND_READ) & _VALIDATED,
        ("-score", "id"),
    ),
    Tab(
        "outside",
        _("Outside validated population"),
        Q(
            status=Study.Status.DONE,
            review_status__in=[Study.ReviewStatus.UNREVIEWED, Study.ReviewStatus.SECOND_READ],
        )
        & _OUTSIDE,
        # Newest first, never by score: a high score here is not evidence of pneumonia.
        ("-created_at", "id"),
    ),
    Tab(
        "unscored",
        _("Rejected and failed"),
        Q(status__in=[Study.Status.FAILED, Study.Status.REJECTED], review_status=Study.ReviewStatus.UNREVIEWED),
        ("-created_at", "id"),
    ),
    Tab("reviewed", _("Reviewed"), Q(review_status=Study.ReviewStatus.REVIEWED), ("-reviewed_at", "id")),
]
TABS_BY_SLUG = {tab.slug: tab for tab in TABS}


class WorklistFilter(forms.Form):
    batch = forms.IntegerField(required=False, min_value=1, label=_("Batch"))
    date_from = forms.DateField(required=False, label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    label = forms.ChoiceField(required=False, label=_("Model label"), choices=[("", _("Any"))] + Result.Label.choices)
    status = forms.ChoiceField(
        required=False,
        label=_("Status"),
        choices=[("", _("Any")), (Study.Status.FAILED, _("Failed")), (Study.Status.REJECTED, _("Rejected"))],
    )

    def apply(self, studies: QuerySet[Study]) -> QuerySet[Study]:
        if not self.is_valid():
            return studies
        data = self.cleaned_data
        if data["batch"]:
            studies = studies.filter(batch_id=data["batch"])
        if data["date_from"]:
            studies = studies.filter(created_at__date__gte=data["date_from"])
        if data["date_to"]:
            studies = studies.filter(created_at__date__lte=data["date_to"])
        if data["label"]:
            studies = studies.filter(model_label=data["label"])
        if data["status"]:
            studies = studies.filter(status=data["status"])
        return studies


def worklist(user, tab: Tab, filters: WorklistFilter) -> QuerySet[Study]:
    return filters.apply(access.visible_studies(user).filter(tab.condition)).order_by(*tab.ordering)


def tab_counts(user, filters: WorklistFilter) -> dict[str, int]:
    """Studies per tab under the current filters, in one query."""
    from django.db.models import Count

    studies = filters.apply(access.visible_studies(user))
    counts = studies.aggregate(**{tab.slug: Count("pk", filter=tab.condition) for tab in TABS})
    return counts


def next_study(user, after: Study) -> Study | None:
    """The study a radiologist should read after ``after``: the top of the lane it came from."""
    tab = TABS_BY_SLUG["outside" if after.population == Study.Population.OUTSIDE else "to-review"]
    return worklist(user, tab, WorklistFilter({})).exclude(pk=after.pk).first()
