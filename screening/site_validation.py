"""Site validation: a hospital measures the served model on its own labelled studies, then may adopt it.

Two ways in: labelled files (a zip or folder with ``NORMAL/`` and
``PNEUMONIA/`` folders, scored through the normal queue), or the studies its
radiologists have already reviewed (their finding is the label). The report
is computed once every case is finished and stored with the model version.
An administrator may then adopt a site operating point (the threshold that
reaches a chosen sensitivity on the report) and a site prevalence, but only
when the report's AUC lower confidence bound reaches
``SITE_VALIDATION_MIN_AUC``; a report below it says plainly not to rely on
the model here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils.formats import number_format
from django.utils.translation import gettext, gettext_lazy, override

from screening import audit, reasons
from screening.models import AuditEvent, Batch, Result, Review, SiteSetting, SiteValidation, SiteValidationCase, Study
from screening.serving import current_model_version, model_card
from screening.submission import NothingAccepted, submit

LABELS = {"NORMAL": False, "PNEUMONIA": True}
MIN_CASES_PER_CLASS = 5
# Below this many cases of a class, a bootstrap interval is too narrow to trust (a perfectly
# separated 8 + 8 gives 1.000-1.000): the report says so, whatever its verdict.
SMALL_SAMPLE_PER_CLASS = 50

# A report's ``verdict`` as shown to people ("running": no report yet).
VERDICTS = {
    "running": gettext_lazy("running"),
    "insufficient": gettext_lazy("too few cases"),
    "adoptable": gettext_lazy("adoptable"),
    "not_reliable": gettext_lazy("not reliable here"),
}


class ValidationRefused(ValueError):
    """The input cannot make a site validation; the message says why, for the administrator."""


class AdoptionRefused(ValueError):
    """The report does not allow adopting a site operating point; the message says why."""


def label_from_name(name: str) -> bool | None:
    """True/False from the nearest ``NORMAL``/``PNEUMONIA`` folder in a stored name (``x.zip/NORMAL/a.jpeg``)."""
    for part in reversed(name.replace("\\", "/").split("/")[:-1]):
        if part.upper() in LABELS:
            return LABELS[part.upper()]
    return None


def from_labelled_files(
    user, files: Iterable[tuple[str, BinaryIO]], *, name: str = "", source: str = Batch.Source.WEB
) -> SiteValidation:
    """Submit labelled files through the normal queue as the cases of a new validation.

    Refused, with nothing kept, when no file sits in a NORMAL/ or PNEUMONIA/
    folder or only one class is present. Unlabelled files elsewhere in the
    upload are scored but not counted; the report says how many.
    """
    with transaction.atomic():
        try:
            outcome = submit(user, source, files, name=name)
        except NothingAccepted as exc:
            refused = "; ".join(f"{r.name}: {reasons.status_message(r.error)}" for r in exc.refusals[:5])
            message = gettext("No file could be accepted (%(refused)s).") % {"refused": refused}
            raise ValidationRefused(message) from None
        labelled = [(study, label_from_name(study.original_name)) for study in outcome.studies]
        cases = [(study, label) for study, label in labelled if label is not None]
        _check_classes([label for _, label in cases], gettext("files in NORMAL/ or PNEUMONIA/ folders"))
        return _create(
            user,
            SiteValidation.Source.LABELLED_FILES,
            name,
            [(study.pk, label) for study, label in cases],
            batch=outcome.batch,
            unlabelled=len(labelled) - len(cases),
            refused=len(outcome.refusals),
        )


def from_reviewed_studies(user) -> SiteValidation:
    """A validation of the studies radiologists have read as normal or pneumonia, scored by the served model."""
    version = current_model_version()
    latest_findings: dict[int, str] = {}
    reviews = Review.objects.order_by("study_id", "-created_at", "-pk").values_list("study_id", "finding")
    for study_id, finding in reviews:
        latest_findings.setdefault(study_id, finding)
    scored = set(
        Result.objects.filter(study_id__in=latest_findings, model_version=version).values_list("study_id", flat=True)
    )
    cases = [
        (study_id, finding == Review.Finding.PNEUMONIA)
        for study_id, finding in sorted(latest_findings.items())
        if study_id in scored and finding in (Review.Finding.NORMAL, Review.Finding.PNEUMONIA)
    ]
    _check_classes(
        [label for _, label in cases],
        gettext("reviewed studies (normal or pneumonia) scored by model %(version)s") % {"version": version},
    )
    with transaction.atomic():
        return _create(user, SiteValidation.Source.REVIEWED, "Reviewed studies", cases)


def _create(user, source: str, name: str, cases: list[tuple[int, bool]], batch=None, **details) -> SiteValidation:
    """The validation row, its (study id, label) cases and the audit event, for the served model."""
    validation = SiteValidation.objects.create(
        created_by=user, source=source, name=name[:255], model_version=current_model_version(), batch=batch
    )
    SiteValidationCase.objects.bulk_create(
        SiteValidationCase(validation=validation, study_id=study_id, pneumonia=label) for study_id, label in cases
    )
    audit.record(
        AuditEvent.Action.SITE_VALIDATION,
        actor=user,
        obj=validation,
        source=source,
        cases=len(cases),
        model_version=validation.model_version,
        **details,
    )
    return validation


def _check_classes(labels: list[bool], what: str) -> None:
    normals, pneumonias = labels.count(False), labels.count(True)
    if not labels:
        raise ValidationRefused(gettext("No labelled cases: found no %(what)s.") % {"what": what})
    if min(normals, pneumonias) < MIN_CASES_PER_CLASS:
        raise ValidationRefused(
            gettext(
                "A validation needs at least %(min)d normal and %(min)d pneumonia cases; found %(normals)d normal "
                "and %(pneumonias)d pneumonia %(what)s."
            )
            % {"min": MIN_CASES_PER_CLASS, "normals": normals, "pneumonias": pneumonias, "what": what}
        )


def refresh(validation: SiteValidation) -> SiteValidation:
    """Compute and store the report once every case is finished; until then, leave it empty."""
    if validation.report is not None:
        return validation
    studies = Study.objects.filter(pk__in=validation.cases.values("study_id"))
    if studies.filter(status__in=Study.UNFINISHED).exists():
        return validation
    validation.report = compute_report(validation)
    validation.save(update_fields=["report", "updated_at"])
    return validation


def progress(validation: SiteValidation) -> tuple[int, int]:
    """(finished cases, all cases)."""
    studies = Study.objects.filter(pk__in=validation.cases.values("study_id"))
    return studies.filter(status__in=Study.FINISHED).count(), studies.count()


def compute_report(validation: SiteValidation) -> dict:
    """What the report page shows, from the results of the validation's model version."""
    from ml.evaluation.metrics import at_threshold, bootstrap_ci, reliability_table, roc_auc

    cases, scored = _scored_cases(validation)
    statuses = [case.study.status for case in cases]
    report: dict = {
        "model_version": validation.model_version,
        "cases": len(cases),
        "scored": len(scored),
        "rejected": statuses.count(Study.Status.REJECTED),
        "failed": statuses.count(Study.Status.FAILED),
        "unlabelled": _unlabelled(validation),
        "min_auc_lower_bound": settings.SITE_VALIDATION_MIN_AUC,
    }
    y, p = _labels_and_probabilities(scored)
    outside = [result.population == Study.Population.OUTSIDE for _, result in scored]
    report["outside_share"] = sum(outside) / len(scored) if scored else None
    report["n_pneumonia"], report["n_normal"] = int(y.sum()), int((~y).sum())
    if y.sum() < 2 or (~y).sum() < 2:
        report["verdict"] = "insufficient"
        with override("en"):
            report["message"] = verdict_message(report)
        return report
    threshold = float(model_card().get("threshold", 0.5))
    # Resampled by study: the service keeps no patient identity to group a patient's images by.
    low, high = bootstrap_ci(lambda idx: roc_auc(y[idx], p[idx]), [str(case.study_id) for case, _ in scored])
    report.update(
        {
            "auc": roc_auc(y, p),
            "auc_ci": [low, high],
            "threshold": threshold,
            # No case above the threshold leaves PPV undefined (NaN), which a JSON column refuses.
            "at_threshold": _defined(at_threshold(y, p, threshold)),
            "calibration": reliability_table(y, p, bins=10),
            "roc": _roc_points(y, p),
            "prevalence": float(y.mean()),
        }
    )
    report["verdict"] = "adoptable" if low >= settings.SITE_VALIDATION_MIN_AUC else "not_reliable"
    report["small_sample"] = min(report["n_pneumonia"], report["n_normal"]) < SMALL_SAMPLE_PER_CLASS
    # Stored in English with the report (the audit trail and the command line read it);
    # pages show ``verdict_message`` in the reader's language.
    with override("en"):
        report["message"] = verdict_message(report)
    return report


def verdict_label(report: dict | None) -> str:
    """The report's verdict in a word or two, in the active language."""
    verdict = (report or {}).get("verdict", "running")
    return str(VERDICTS.get(verdict, verdict))


def verdict_message(report: dict) -> str:
    """The report's conclusion in the active language, from the figures it holds."""
    if report["verdict"] == "insufficient":
        return gettext(
            "Only %(pneumonia)d pneumonia and %(normal)d normal cases could be scored (%(rejected)d rejected, "
            "%(failed)d failed): too few to measure the model here. Do not rely on the model at this site."
        ) % {
            "pneumonia": report["n_pneumonia"],
            "normal": report["n_normal"],
            "rejected": report["rejected"],
            "failed": report["failed"],
        }
    figures = {
        "auc": number_format(report["auc"], 3),
        "low": number_format(report["auc_ci"][0], 3),
        "high": number_format(report["auc_ci"][1], 3),
        "n": report["n_pneumonia"] + report["n_normal"],
        "bound": number_format(report["min_auc_lower_bound"], 2),
    }
    if report["verdict"] == "adoptable":
        message = gettext(
            "AUC %(auc)s (95 %% CI %(low)s–%(high)s) on %(n)d cases: the lower bound reaches %(bound)s. "
            "An administrator may adopt a site operating point."
        )
    else:
        message = gettext(
            "AUC %(auc)s (95 %% CI %(low)s–%(high)s) on %(n)d cases: the lower bound is below %(bound)s. "
            "The model is not shown to work for this site's patients; we recommend not relying on it here."
        )
    message %= figures
    if report.get("small_sample"):
        message += " " + gettext(
            "Fewer than %(n)d cases of a class: the interval is optimistic; validate on more studies before "
            "relying on an adopted operating point."
        ) % {"n": SMALL_SAMPLE_PER_CLASS}
    return message


def _defined(values: dict) -> dict:
    """The same figures with undefined ones (NaN) as None."""
    return {
        k: _defined(v) if isinstance(v, dict) else None if isinstance(v, float) and math.isnan(v) else v
        for k, v in values.items()
    }


def _scored_cases(validation: SiteValidation) -> tuple[list[SiteValidationCase], list[tuple]]:
    """All cases, and (case, result) for those the validation's model version scored."""
    cases = list(validation.cases.select_related("study"))
    results = _results_by_study(cases, validation.model_version)
    return cases, [(case, results[case.study_id]) for case in cases if case.study_id in results]


def _labels_and_probabilities(scored: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([case.pneumonia for case, _ in scored], dtype=bool)
    p = np.array([result.probability for _, result in scored], dtype=np.float64)
    return y, p


def _results_by_study(cases: list[SiteValidationCase], version: str) -> dict[int, Result]:
    """Each case's result from the validation's model version (a linked duplicate shows its original's)."""
    source_of = {case.study_id: case.study.duplicate_of_id or case.study_id for case in cases}
    results = Result.objects.filter(study_id__in=set(source_of.values()), model_version=version)
    by_source = {result.study_id: result for result in results}
    return {study_id: by_source[source] for study_id, source in source_of.items() if source in by_source}


def _unlabelled(validation: SiteValidation) -> int:
    if validation.batch_id is None:
        return 0
    return validation.batch.studies.exclude(pk__in=validation.cases.values("study_id")).count()


def _roc_points(y: np.ndarray, p: np.ndarray, limit: int = 200) -> list[list[float]]:
    """(1 - specificity, sensitivity) at every distinct score, thinned to ``limit`` points for the page."""
    order = np.argsort(-p, kind="stable")
    y_sorted, p_sorted = y[order], p[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tpr = np.cumsum(y_sorted)[distinct] / y.sum()
    fpr = np.cumsum(~y_sorted)[distinct] / (~y).sum()
    points = np.c_[np.r_[0.0, fpr], np.r_[0.0, tpr]]
    if len(points) > limit:
        points = points[np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))]
    return [[round(float(x), 4), round(float(t), 4)] for x, t in points]


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float


def operating_point(validation: SiteValidation, target_sensitivity: float) -> OperatingPoint:
    """The highest threshold whose sensitivity on the report's cases reaches ``target_sensitivity``."""
    from ml.evaluation.metrics import at_threshold, threshold_for_sensitivity

    y, p = _labels_and_probabilities(_scored_cases(validation)[1])
    threshold = float(threshold_for_sensitivity(y, p, target_sensitivity))
    measured = at_threshold(y, p, threshold)
    return OperatingPoint(threshold, measured["sensitivity"], measured["specificity"])


def adopt(validation: SiteValidation, user, *, target_sensitivity: float, prevalence: float | None) -> SiteSetting:
    """Adopt a site operating point from ``validation``; ``AdoptionRefused`` says why not."""
    refresh(validation)
    report = validation.report
    if report is None:
        raise AdoptionRefused(gettext("The validation is still running; adopt once every case is finished."))
    if report.get("verdict") != "adoptable":
        raise AdoptionRefused(verdict_message(report))
    if validation.model_version != current_model_version():
        raise AdoptionRefused(
            gettext(
                "This report measured model %(measured)s, but the service now serves %(served)s; run a new validation."
            )
            % {"measured": validation.model_version, "served": current_model_version()}
        )
    if not 0.5 <= target_sensitivity <= 1.0 or math.isnan(target_sensitivity):
        raise AdoptionRefused(gettext("The target sensitivity must be between 0.50 and 1.00."))
    if prevalence is not None:
        if not 0.01 <= prevalence <= 0.99:
            raise AdoptionRefused(gettext("The site prevalence must be between 0.01 and 0.99."))
        if model_card().get("calibration_prevalence") is None:
            raise AdoptionRefused(
                gettext("The served model's card does not say which prevalence it is calibrated for.")
            )
    point = operating_point(validation, target_sensitivity)
    with transaction.atomic():
        setting = SiteSetting.objects.create(
            validation=validation,
            model_version=validation.model_version,
            target_sensitivity=target_sensitivity,
            threshold=point.threshold,
            prevalence=prevalence,
            adopted_by=user,
        )
        audit.record(
            AuditEvent.Action.SITE_ADOPTED,
            actor=user,
            obj=setting,
            validation=validation.pk,
            model_version=setting.model_version,
            threshold=setting.threshold,
            target_sensitivity=target_sensitivity,
            sensitivity_on_report=point.sensitivity,
            specificity_on_report=point.specificity,
            prevalence=prevalence,
        )
    return setting
