"""Recording a radiologist's review.

Reviews are append-only; the newest one sets the study's review status, which
the worklist reads. The review remembers which model result was on screen.
"""

from __future__ import annotations

from django import forms
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from screening import audit
from screening.models import AuditEvent, Review, Study


class ReviewForm(forms.ModelForm):
    agrees_with_model = forms.TypedChoiceField(
        label=_("Do you agree with the model?"),
        choices=[("yes", _("Agree")), ("no", _("Disagree"))],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
        required=False,
        empty_value=None,
    )

    finding = forms.ChoiceField(label=_("Finding"), choices=Review.Finding.choices, widget=forms.RadioSelect)

    class Meta:
        model = Review
        fields = ["agrees_with_model", "finding", "comment", "needs_second_read"]
        widgets = {"comment": forms.Textarea(attrs={"rows": 3})}
        labels = {"comment": _("Comment"), "needs_second_read": _("Needs second read")}


def save_review(study: Study, reviewer, form: ReviewForm) -> Review:
    with transaction.atomic():
        review = form.save(commit=False)
        review.study = study
        review.reviewer = reviewer
        review.result = study.latest_result()
        review.save()
        status = Study.ReviewStatus.SECOND_READ if review.needs_second_read else Study.ReviewStatus.REVIEWED
        Study.objects.filter(pk=study.pk).update(review_status=status, reviewed_at=timezone.now())
        audit.record(
            AuditEvent.Action.REVIEW_SAVED,
            actor=reviewer,
            obj=study,
            review=review.pk,
            finding=review.finding,
            agrees_with_model=review.agrees_with_model,
            needs_second_read=review.needs_second_read,
        )
    return review
