"""Web pages: submitters upload and follow batches; radiologists work the
triage worklist and review studies; everyone sees only what they may."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _

from ml.serving.decode import UnscorableInput
from screening import access, audit, reasons, selectors, triage
from screening.governance import monitoring
from screening.intake import previews
from screening.intake.storage import StorageUnavailable
from screening.intake.submission import NothingAccepted, submit
from screening.models import AuditEvent, Batch
from screening.review import ReviewForm, save_review
from screening.web import exports
from screening.web.forms import UploadForm

SEES_STUDIES = (access.SUBMIT, access.VIEW_ALL)


@login_required
def batch_list(request):
    access.require(request, *SEES_STUDIES)
    batches = selectors.batches_with_counts(request.user)
    return render(
        request, "screening/batch_list.html", {"batches": batches, "can_submit": access.can_submit(request.user)}
    )


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
def batch_new(request):
    """Upload form. The page's script posts with ``Accept: application/json`` to
    show upload and processing progress; without script it is a plain form."""
    access.require(request, access.SUBMIT)
    form = UploadForm()
    if request.method == "POST":
        try:
            form = UploadForm(request.POST, request.FILES)
            valid = form.is_valid()
        except (TooManyFilesSent, RequestDataTooBig):
            message = _("Too many files in one upload; send a zip or split the batch.")
            if _wants_json(request):
                return JsonResponse({"error": message}, status=400)
            messages.error(request, message)
            return render(request, "screening/batch_new.html", {"form": UploadForm()}, status=400)
        if valid:
            files = form.cleaned_data["files"]
            try:
                outcome = submit(
                    request.user,
                    Batch.Source.WEB,
                    ((f.name, f) for f in files),
                    declaration=form.cleaned_data["declaration"],
                    priority=form.cleaned_data["priority"],
                )
            except StorageUnavailable as exc:
                if _wants_json(request):
                    return JsonResponse({"error": str(exc)}, status=507)
                form.add_error(None, str(exc))
            except NothingAccepted as exc:
                refused = reasons.upload_items([r.as_dict() for r in exc.refusals])
                if _wants_json(request):
                    return JsonResponse({"error": _("No file could be accepted."), "refused": refused}, status=400)
                for item in refused:
                    messages.error(request, f"{item['file']}: {item['error']}")
            else:
                url = reverse("screening:batch_detail", kwargs={"batch_id": outcome.batch.pk})
                if _wants_json(request):
                    return JsonResponse(
                        {
                            "batch": outcome.batch.pk,
                            "url": url,
                            "progress_url": reverse(
                                "screening:api_batch_detail", kwargs={"batch_id": outcome.batch.pk}
                            ),
                            "accepted": len(outcome.studies),
                            "refused": reasons.upload_items([r.as_dict() for r in outcome.refusals]),
                        },
                        status=202,
                    )
                return redirect(url)
        elif _wants_json(request):
            errors = [str(e) for errors in form.errors.values() for e in errors]
            return JsonResponse({"error": " ".join(errors) or _("Nothing to upload.")}, status=400)
    return render(request, "screening/batch_new.html", {"form": form})


@login_required
def batch_detail(request, batch_id: int):
    access.require(request, *SEES_STUDIES)
    batch = get_object_or_404(access.visible_batches(request.user).select_related("submitted_by"), pk=batch_id)
    studies = selectors.batch_studies(batch)
    progress = selectors.batch_progress(batch)
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


@login_required
def home(request):
    if request.user.has_perm(access.REVIEW):
        return redirect("screening:worklist")
    return redirect("screening:batch_list")


@login_required
def worklist(request):
    access.require(request, access.REVIEW)
    tab = triage.TABS_BY_SLUG.get(request.GET.get("tab", "to-review"), triage.TABS[0])
    filters = triage.WorklistFilter(request.GET or None)
    studies = triage.worklist(request.user, tab, filters).select_related("batch")
    page = Paginator(studies, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "screening/worklist.html",
        {
            "tabs": triage.TABS,
            "tab": tab,
            "counts": triage.tab_counts(request.user, filters),
            "monitoring_alerts": monitoring.alert_titles(),
            "filters": filters,
            "page": page,
            "query": query.urlencode(),
        },
    )


@login_required
def worklist_export(request):
    access.require(request, access.REVIEW)
    tab = triage.TABS_BY_SLUG.get(request.GET.get("tab", "to-review"), triage.TABS[0])
    studies = triage.worklist(request.user, tab, triage.WorklistFilter(request.GET or None))
    audit.record(
        AuditEvent.Action.EXPORT, actor=request.user, what="worklist", tab=tab.slug, filters=request.GET.dict()
    )
    return exports.csv_response(studies, f"worklist-{tab.slug}.csv")


@login_required
def batch_export(request, batch_id: int):
    access.require(request, *SEES_STUDIES)
    batch = get_object_or_404(access.visible_batches(request.user), pk=batch_id)
    audit.record(AuditEvent.Action.EXPORT, actor=request.user, obj=batch, what="batch")
    return exports.csv_response(batch.studies.order_by("pk"), f"batch-{batch.pk}.csv")


@login_required
def study_detail(request, study_id: int):
    access.require(request, *SEES_STUDIES)
    study = get_object_or_404(
        access.visible_studies(request.user).select_related("batch", "batch__submitted_by", "duplicate_of"),
        pk=study_id,
    )
    can_review = request.user.has_perm(access.REVIEW)
    form = ReviewForm()
    if request.method == "POST":
        if not can_review:
            raise PermissionDenied
        form = ReviewForm(request.POST)
        if form.is_valid():
            save_review(study, request.user, form)
            messages.success(request, _("Review saved for study %(id)s.") % {"id": study.pk})
            following = triage.next_study(request.user, after=study)
            if following is not None:
                return redirect("screening:study_detail", study_id=following.pk)
            return redirect("screening:worklist")
    else:
        audit.record(AuditEvent.Action.STUDY_VIEWED, actor=request.user, obj=study)
    reviews = study.reviews.select_related("reviewer").order_by("-created_at")
    result = study.latest_result()
    return render(
        request,
        "screening/study_detail.html",
        {
            "study": study,
            "result": result,
            "outside_lungs": selectors.evidence_outside_lungs(result),
            "reviews": reviews,
            "form": form if can_review else None,
            "deliveries": selectors.deliveries(study),
            "dicom": [
                (label, value)
                for label, value in [
                    (_("Accession number"), study.accession_number),
                    (_("Study date"), study.study_date.isoformat() if study.study_date else ""),
                    (_("Modality"), study.modality),
                    (_("View position"), study.view_position),
                    (_("Body part"), study.body_part),
                    (_("Patient age"), study.patient_age),
                    (_("Study instance UID"), study.study_instance_uid),
                    (_("Series instance UID"), study.series_instance_uid),
                    (_("SOP instance UID"), study.sop_instance_uid),
                ]
                if value
            ],
        },
    )


@login_required
def study_heatmap(request, study_id: int):
    access.require(request, *SEES_STUDIES)
    study = get_object_or_404(access.visible_studies(request.user).select_related("duplicate_of"), pk=study_id)
    result = study.latest_result()
    try:
        path = None if result is None else previews.heatmap_file(result, study.duplicate_of or study)
    except OSError:
        path = None
    if path is None:
        raise Http404(_("This study has no heatmap."))
    response = FileResponse(path.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
def study_image(request, study_id: int):
    access.require(request, *SEES_STUDIES)
    study = get_object_or_404(access.visible_studies(request.user), pk=study_id)
    try:
        path = previews.preview_file(study)
    except (UnscorableInput, OSError):
        raise Http404(_("This study has no displayable image.")) from None
    response = FileResponse(path.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
