"""A study's result in the formats other systems read: DICOM SR, DICOM heatmap capture, FHIR.

For systems that pull rather than receive (a RIS asking for a report, a
viewer fetching the SR). Same authentication and visibility as the rest of
the API; the objects are the same ones (same UIDs) the outbox sends to PACS.
"""

from __future__ import annotations

import io

import pydicom
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from screening import reasons, selectors
from screening.api.fhir import diagnostic_report
from screening.api.v1 import _error, api_view
from screening.dicom import results
from screening.models import Result, Study


def _scored_study(request, study_id: int) -> tuple[Study, Result | None]:
    study = selectors.visible_study(request.user, study_id)
    return study, study.latest_result()


def _dicom_response(dataset: pydicom.Dataset, filename: str) -> HttpResponse:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    response = HttpResponse(buffer.getvalue(), content_type="application/dicom")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def _dicom_object(request, study_id: int, kind: str, filename: str):
    study, result = _scored_study(request, study_id)
    if result is None:
        return _error(404, "no_result", _("The study has no result yet."))
    result.study = study.duplicate_of or study
    try:
        dataset = results.build(result, kind)
    except results.SourceUnavailable as exc:
        return _error(404, "not_dicom", reasons.status_message(str(exc)))
    return _dicom_response(dataset, f"study-{study.pk}-{filename}")


@api_view
@require_GET
def report_dcm(request, study_id: int):
    return _dicom_object(request, study_id, "sr", "report.dcm")


@api_view
@require_GET
def overlay_dcm(request, study_id: int):
    return _dicom_object(request, study_id, "sc", "overlay.dcm")


@api_view
@require_GET
def fhir_report(request, study_id: int):
    study, result = _scored_study(request, study_id)
    if result is None:
        return _error(404, "no_result", _("The study has no result yet."))
    report = diagnostic_report(
        study_id=study.pk,
        accession_number=study.accession_number,
        study_instance_uid=study.study_instance_uid,
        study_date=study.study_date,
        finding=results.finding(result),
        issued=result.created_at,
        base_url=request.build_absolute_uri("/api/v1").rstrip("/"),
    )
    return JsonResponse(report, content_type="application/fhir+json", json_dumps_params={"indent": 1})
