"""JSON API, version 1: submit studies and batches, follow their progress.

Clients authenticate with a per-user token (``Authorization: Token <key>``);
GET requests also accept the web session so the site's pages can poll.
Anonymous calls get 401; objects the caller may not see get 404, exactly as
objects that do not exist.

Every error is ``{"code": ..., "error": ...}``: ``code`` is a stable token for
programs to branch on, ``error`` a sentence for people in the language the
request asks for (``Accept-Language``; English when it asks for none).
Reasons the service stored in English (a refused file, a failed study) are
shown the same way; the database, audit trail and exports keep them English.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from screening import access, reasons, selectors
from screening.api import tokens
from screening.intake.storage import StorageUnavailable
from screening.intake.submission import NothingAccepted, SubmissionOutcome, submit
from screening.models import Batch, Result, Study
from screening.population import Declaration, InvalidDeclaration


def _error(status: int, code: str, message: str, **extra) -> JsonResponse:
    return JsonResponse({"code": code, "error": message, **extra}, status=status)


def api_view(view):
    """Authenticate by token (or session, for GET) and answer 401 otherwise; 429 past the token's rate limit."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        token = tokens.token_for_request(request)
        user = None if token is None else token.user
        if token is not None and tokens.record_use(token) > settings.API_RATE_LIMIT_PER_MINUTE:
            response = _error(
                429,
                "rate_limited",
                _(
                    "Too many requests: this token may make %(n)d a minute. Wait and try again; send many files "
                    "as one batch."
                )
                % {"n": settings.API_RATE_LIMIT_PER_MINUTE},
            )
            response["Retry-After"] = str(tokens.seconds_to_next_window())
            return response
        if user is None and request.method == "GET" and request.user.is_authenticated:
            user = request.user
        if user is None:
            response = _error(
                401,
                "authentication_required",
                _("Authentication required: send 'Authorization: Token <your API token>'."),
            )
            response["WWW-Authenticate"] = "Token"
            return response
        request.user = user
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def result_json(result: Result | None) -> dict | None:
    if result is None:
        return None
    return {
        "model_version": result.model_version,
        "probability": round(result.probability, 6),
        "label": result.label,
        "threshold": result.threshold,
        # The site's adopted operating point that set the label (null: the model card's), and the
        # probability re-expressed at the site's prevalence when one was adopted.
        "site_setting": result.site_setting_id,
        "site_probability": None if result.site_probability is None else round(result.site_probability, 6),
        "viral_probability": None if result.viral_probability is None else round(result.viral_probability, 6),
        # Share of the heatmap's evidence outside the lung fields (null for models without a lung-field head).
        "evidence_outside_lungs": result.evidence_outside_lungs,
        "created_at": result.created_at.isoformat(),
    }


def _same_submitter(study: Study, other: Study | None) -> bool:
    return other is not None and other.batch.submitted_by_id == study.batch.submitted_by_id


def study_json(study: Study) -> dict:
    return {
        "id": study.pk,
        "batch": study.batch_id,
        "file": study.original_name,
        "format": study.format,
        "sha256": study.sha256,
        "status": study.status,
        "priority": study.priority,
        "error": reasons.status_message(study.status_message)
        if study.status in (Study.Status.FAILED, Study.Status.REJECTED)
        else None,
        "note": reasons.status_message(study.status_message)
        if study.status == Study.Status.DONE and study.status_message
        else None,
        # Another user's study id is never revealed (the note says so without it).
        "duplicate_of": study.duplicate_of_id if _same_submitter(study, study.duplicate_of) else None,
        "result": result_json(study.latest_result()),
        # null until a result exists: "validated" or "outside" the population the model was validated on.
        "population": study.population or None,
        "population_reason": reasons.population_reason(study.population_reason) or None,
        "created_at": study.created_at.isoformat(),
        "finished_at": study.finished_at.isoformat() if study.finished_at else None,
    }


def _outcome_json(outcome: SubmissionOutcome) -> dict:
    return {
        "batch": outcome.batch.pk,
        "studies": [{"id": s.pk, "file": s.original_name, "status": s.status} for s in outcome.studies],
        "refused": reasons.upload_items([r.as_dict() for r in outcome.refusals]),
        "notes": reasons.upload_items(outcome.notes),
    }


def _uploaded(request, field: str):
    try:
        return request.FILES.getlist(field)
    except TooManyFilesSent:
        return _error(400, "too_many_files", _("Too many files in one request; send a zip or split the batch."))
    except RequestDataTooBig:
        return _error(400, "request_too_large", _("Request is too large."))


def _submit(request, files) -> JsonResponse:
    """Submit ``files``; optional form fields: ``population`` and ``age`` (who the patients are), ``priority``."""
    if not access.can_submit(request.user):
        return _error(403, "forbidden", _("Your account may not submit studies."))
    try:
        declaration = Declaration.parse(request.POST.get("population"), request.POST.get("age"))
    except InvalidDeclaration as exc:
        return _error(400, "invalid_declaration", reasons.status_message(str(exc)))
    priority = request.POST.get("priority") or Study.Priority.ROUTINE
    if priority not in Study.Priority.values:
        return _error(
            400,
            "invalid_priority",
            _("Priority must be one of: %(choices)s.") % {"choices": ", ".join(Study.Priority.values)},
        )
    try:
        outcome = submit(
            request.user, Batch.Source.API, ((f.name, f) for f in files), declaration=declaration, priority=priority
        )
    except NothingAccepted as exc:
        refused = reasons.upload_items([r.as_dict() for r in exc.refusals])
        return _error(400, "nothing_accepted", _("No file could be accepted."), refused=refused)
    except StorageUnavailable as exc:
        return _error(507, "storage_unavailable", str(exc))
    return JsonResponse(_outcome_json(outcome), status=202)


@api_view
@require_POST
def submit_study(request):
    files = _uploaded(request, "file")
    if isinstance(files, JsonResponse):
        return files
    if len(files) != 1:
        return _error(
            400,
            "missing_file",
            _("Send exactly one file in the multipart field 'file' (use /api/v1/batches for several)."),
        )
    return _submit(request, files)


@api_view
@require_POST
def submit_batch(request):
    files = _uploaded(request, "files")
    if isinstance(files, JsonResponse):
        return files
    if not files:
        return _error(400, "missing_file", _("Send files (or one zip) in the multipart field 'files'."))
    return _submit(request, files)


@api_view
@require_GET
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(access.visible_batches(request.user), pk=batch_id)
    studies = selectors.batch_studies(batch)
    return JsonResponse(
        {
            "id": batch.pk,
            "source": batch.source,
            "name": batch.name,
            "created_at": batch.created_at.isoformat(),
            "files_received": batch.files_received,
            "progress": selectors.batch_progress(batch),
            "upload_report": reasons.upload_items(batch.upload_report),
            "studies": [study_json(s) for s in studies],
        }
    )


@api_view
@require_GET
def study_detail(request, study_id: int):
    return JsonResponse(study_json(selectors.visible_study(request.user, study_id)))
