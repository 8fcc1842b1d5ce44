"""Site validation pages: administrators run a validation and adopt its operating point; auditors read."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from screening import access
from screening.governance import site_validation
from screening.intake.storage import StorageUnavailable
from screening.models import SiteValidation
from screening.selectors import current_site_setting
from screening.served_model import current_model_version
from screening.web.forms import AdoptForm, SiteValidationForm

VALIDATE = "screening.validate_site"
VIEW = "screening.view_sitevalidation"


@login_required
def site_validation_list(request):
    access.require(request, VALIDATE, VIEW)
    form = SiteValidationForm()
    if request.method == "POST":
        access.require(request, VALIDATE)
        form = SiteValidationForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                if form.cleaned_data["use_reviewed"]:
                    validation = site_validation.from_reviewed_studies(request.user)
                else:
                    archive = form.cleaned_data["archive"]
                    validation = site_validation.from_labelled_files(
                        request.user, [(archive.name, archive)], name=archive.name
                    )
            except (site_validation.ValidationRefused, StorageUnavailable) as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("screening:site_validation_detail", validation_id=validation.pk)
    validations = list(SiteValidation.objects.select_related("created_by").order_by("-created_at")[:100])
    for validation in validations:
        validation.verdict_label = site_validation.verdict_label(validation.report)
    return render(
        request,
        "screening/site_validation_list.html",
        {
            "validations": validations,
            "form": form,
            "can_validate": request.user.has_perm(VALIDATE),
            "current": current_site_setting(current_model_version()),
        },
    )


@login_required
def site_validation_detail(request, validation_id: int):
    access.require(request, VALIDATE, VIEW)
    validation = get_object_or_404(SiteValidation.objects.select_related("created_by"), pk=validation_id)
    site_validation.refresh(validation)
    done, total = site_validation.progress(validation)
    report = validation.report
    return render(
        request,
        "screening/site_validation_detail.html",
        {
            "validation": validation,
            "report": report,
            "verdict_message": site_validation.verdict_message(report) if report else "",
            "done": done,
            "total": total,
            "roc_points": _svg_points(report.get("roc", [])) if report else "",
            "calibration_points": _calibration_points(report) if report else [],
            "operating_rows": _operating_rows(report) if report else [],
            "subgroup_rows": _subgroup_rows(report) if report else [],
            "adopt_form": AdoptForm(),
            "can_adopt": request.user.has_perm(VALIDATE) and bool(report) and report.get("verdict") == "adoptable",
            "settings": validation.settings.select_related("adopted_by").order_by("-created_at"),
        },
    )


@login_required
@require_POST
def site_validation_adopt(request, validation_id: int):
    access.require(request, VALIDATE)
    validation = get_object_or_404(SiteValidation, pk=validation_id)
    form = AdoptForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("screening:site_validation_detail", validation_id=validation.pk)
    try:
        setting = site_validation.adopt(
            validation,
            request.user,
            target_sensitivity=form.cleaned_data["target_sensitivity"],
            prevalence=form.cleaned_data["prevalence"],
        )
    except site_validation.AdoptionRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _(
                "Adopted for model %(version)s: threshold %(threshold)s (sensitivity target %(target)s). "
                "Results from now on use it."
            )
            % {
                "version": setting.model_version,
                "threshold": number_format(setting.threshold, 3),
                "target": number_format(setting.target_sensitivity, 2),
            },
        )
    return redirect("screening:site_validation_detail", validation_id=validation.pk)


SVG_SIZE = 200


def _svg_points(curve: list[list[float]]) -> str:
    """ROC points as an SVG polyline in a SVG_SIZE square (y grows downwards in SVG)."""
    return " ".join(f"{x * SVG_SIZE:.1f},{(1 - y) * SVG_SIZE:.1f}" for x, y in curve)


def _calibration_points(report: dict) -> list[dict]:
    """Reliability bins with cases, placed in the same square: mean probability across, observed rate up."""
    return [
        {"cx": f"{row['mean_probability'] * SVG_SIZE:.1f}", "cy": f"{(1 - row['observed_rate']) * SVG_SIZE:.1f}", **row}
        for row in report.get("calibration", [])
        if row["n"]
    ]


_RATES = ("sensitivity", "specificity", "ppv", "npv")


def _operating_rows(report: dict) -> list[dict]:
    """The model's threshold and each proposed target, with every rate and its interval, for the table."""
    if "at_threshold" not in report:
        return []
    rows = [{"title": _("The model's threshold"), "figures": report["at_threshold"]}]
    for proposal in report.get("proposals", []):
        title = _("Proposed for sensitivity ≥ %(target)s") % {"target": number_format(proposal["target"], 2)}
        rows.append({"title": title, "figures": proposal})
    for row in rows:
        figures = row["figures"]
        if figures.get("threshold") is not None:
            row["cells"] = [
                {"value": figures[name], "low": figures["ci"][name][0], "high": figures["ci"][name][1]}
                for name in _RATES
            ]
    return rows


@login_required
def site_validation_pdf(request, validation_id: int):
    """The report as a PDF to sign and file; audited like every export."""
    from django.http import Http404, HttpResponse

    from screening import audit
    from screening.governance import report_pdf
    from screening.models import AuditEvent

    access.require(request, VALIDATE, VIEW)
    validation = get_object_or_404(SiteValidation.objects.select_related("created_by"), pk=validation_id)
    site_validation.refresh(validation)
    if validation.report is None:
        raise Http404("The validation is still running.")
    data = report_pdf.render(validation, request.user)
    audit.record(AuditEvent.Action.EXPORT, actor=request.user, obj=validation, what="site_validation_pdf")
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="site-validation-{validation.pk}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response


def _subgroup_rows(report: dict) -> list[dict]:
    """One row per subgroup, the dimension named on its first row only."""
    rows = []
    for dimension, groups in (report.get("subgroups") or {}).items():
        for i, group in enumerate(groups):
            title = site_validation.SUBGROUP_TITLES.get(dimension, dimension) if i == 0 else ""
            rows.append({"dimension": title, "auc": None, "sensitivity": None, "specificity": None, **group})
    return rows
