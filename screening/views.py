"""Web pages for submitters: upload a batch, follow it, read its results.

The radiologists' worklist and review pages are built on these (issue 5).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _

from screening import access
from screening.api import batch_progress, studies_with_results
from screening.forms import UploadForm
from screening.models import Batch, Study
from screening.submission import NothingAccepted, submit


@login_required
def batch_list(request):
    batches = (
        access.visible_batches(request.user)
        .select_related("submitted_by")
        .annotate(
            total=Count("studies"),
            finished=Count("studies", filter=Q(studies__status__in=Study.FINISHED)),
            failed=Count("studies", filter=Q(studies__status__in=[Study.Status.FAILED, Study.Status.REJECTED])),
        )
        .order_by("-created_at")[:200]
    )
    return render(request, "screening/batch_list.html", {"batches": batches, "can_submit": access.can_submit(request.user)})


@login_required
def batch_new(request):
    if not access.can_submit(request.user):
        raise PermissionDenied
    form = UploadForm()
    if request.method == "POST":
        try:
            form = UploadForm(request.POST, request.FILES)
            valid = form.is_valid()
        except (TooManyFilesSent, RequestDataTooBig):
            form, valid = UploadForm(), False
            messages.error(request, _("Too many files in one upload; send a zip or split the batch."))
        if valid:
            files = form.cleaned_data["files"]
            try:
                outcome = submit(request.user, Batch.Source.WEB, ((f.name, f) for f in files))
            except NothingAccepted as exc:
                for refusal in exc.refusals:
                    messages.error(request, f"{refusal.name}: {refusal.error}")
            else:
                return redirect("screening:batch_detail", batch_id=outcome.batch.pk)
    return render(request, "screening/batch_new.html", {"form": form})


@login_required
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(access.visible_batches(request.user).select_related("submitted_by"), pk=batch_id)
    studies = studies_with_results().filter(batch=batch).order_by("pk")
    progress = batch_progress(batch)
    return render(
        request,
        "screening/batch_detail.html",
        {
            "batch": batch,
            "studies": [(study, study.latest_result()) for study in studies],
            "progress": progress,
            "refusals": [item for item in batch.upload_report if "error" in item],
            "notes": [item for item in batch.upload_report if "note" in item],
            "running": progress["finished"] < progress["total"],
        },
    )


def home(request):
    return redirect("screening:batch_list")
