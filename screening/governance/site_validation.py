"""Site validation: a hospital measures the served model on its own labelled studies, then may adopt it.

Two ways in: labelled files (a zip or folder with ``NORMAL/`` and
``PNEUMONIA/`` folders, scored through the normal queue in a batch of their
own kind that no worklist, export, FHIR or PACS output ever shows), or the
studies its radiologists have already reviewed (their finding is the label).
The report is computed once every case is finished and stored with the model
version.

An administrator may adopt a site operating point only on evidence that
supports one, because a threshold adopted on weak evidence silently turns
pneumonias into NORMAL labels:

- enough cases: ``SITE_VALIDATION_MIN_PER_CLASS`` scored cases of each class;
- independent cases: each case is compared with the fingerprints of every
  image the model was trained, calibrated or selected on
  (``ml.serving.fingerprint``); matches are left out of every figure and
  named, and more than ``MAX_TRAINING_SHARE`` of them refuses adoption;
- intervals that keep their width on small or perfectly separated samples
  (``ml.statistics.intervals``): the AUC's lower bound must reach
  ``SITE_VALIDATION_MIN_AUC``;
- the adopted threshold is the highest whose sensitivity's exact
  (Clopper-Pearson) 95 % lower bound reaches the target; none, no adoption.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils.formats import number_format as _number_format
from django.utils.translation import gettext, gettext_lazy, override

from screening import audit, reasons
from screening.intake.submission import NothingAccepted, submit
from screening.models import AuditEvent, Batch, Result, Review, SiteSetting, SiteValidation, SiteValidationCase, Study
from screening.served_model import current_model_version, model_card, training_fingerprints

if TYPE_CHECKING:
    from ml.serving.fingerprint import Match

log = logging.getLogger(__name__)

LABELS = {"NORMAL": False, "PNEUMONIA": True}
# A validation below this is refused outright: no figure at all could be computed.
MIN_CASES_PER_CLASS = 5
# Reports stored before independent cases and exact bounds were required have no ``format``.
REPORT_FORMAT = 2
# More matches with training images than this share of the checked cases refuses adoption.
MAX_TRAINING_SHARE = 0.01
OVERLAP_CASES_LISTED = 100
# Targets whose operating point the report shows before anyone adopts one.
PROPOSED_TARGETS = (0.90, 0.95, 0.97)

# A report's ``verdict`` as shown to people ("running": no report yet).
VERDICTS = {
    "running": gettext_lazy("running"),
    "insufficient": gettext_lazy("too few cases"),
    "adoptable": gettext_lazy("adoptable"),
    "not_reliable": gettext_lazy("not reliable here"),
    "not_adoptable": gettext_lazy("not enough independent evidence"),
}


def number_format(value: float, places: int) -> str:
    """``value`` rounded (Django's ``number_format`` cuts digits off) and written in the active locale."""
    return _number_format(round(value, places), places)


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
            outcome = submit(user, source, files, name=name, kind=Batch.Kind.VALIDATION)
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


@dataclass(frozen=True)
class Evidence:
    """A validation's scored cases, split by whether the model has seen the image before."""

    cases: list[SiteValidationCase]  # every case, scored or not
    independent: list[tuple[SiteValidationCase, Result]]  # counted in every figure
    training: list[tuple[SiteValidationCase, Result, Match]]  # matched a training image: left out
    unchecked: list[tuple[SiteValidationCase, Result]]  # no fingerprint could be taken: counted, but a risk

    @property
    def scored(self) -> int:
        return len(self.independent) + len(self.training)

    @property
    def checked(self) -> int:
        return self.scored - len(self.unchecked)


def gather_evidence(validation: SiteValidation) -> Evidence:
    """The cases with the validation model version's results, each compared with the training fingerprints."""
    cases = list(validation.cases.select_related("study", "study__duplicate_of"))
    results = _results_by_study(cases, validation.model_version)
    scored = [(case, results[case.study_id]) for case in cases if case.study_id in results]
    _take_missing_fingerprints([case.study for case, _ in scored])
    known = training_fingerprints()
    independent, training, unchecked = [], [], []
    for case, result in scored:
        value = _fingerprint_of(case.study)
        if not value or known is None:
            unchecked.append((case, result))
            independent.append((case, result))
            continue
        match = known.nearest(value)
        if match.is_training_image:
            training.append((case, result, match))
        else:
            independent.append((case, result))
    return Evidence(cases, independent, training, unchecked)


def _fingerprint_of(study: Study) -> str:
    return study.fingerprint or (study.duplicate_of.fingerprint if study.duplicate_of_id else "")


def _take_missing_fingerprints(studies: list[Study]) -> None:
    """Fingerprint the cases the worker did not (reviewed studies, linked duplicates) from their stored files.

    A file that is gone (purged by retention) or unreadable leaves the case
    unchecked; the report counts those.
    """
    from ml.serving.decode import UnscorableInput
    from ml.serving.fingerprint import fingerprint_of_file

    for study in studies:
        # Every study keeps its own (content-addressed) file, a linked duplicate too.
        if _fingerprint_of(study) or study.file_purged_at is not None or not study.file:
            continue
        try:
            value = fingerprint_of_file(
                study.file.path,
                max_bytes=settings.SCREENING_MAX_FILE_BYTES,
                max_pixels=settings.SCREENING_MAX_IMAGE_PIXELS,
            )
        except (OSError, UnscorableInput) as exc:
            log.warning("no fingerprint for study %s: %s", study.pk, type(exc).__name__)
            continue
        Study.objects.filter(pk=study.pk).update(fingerprint=value)
        study.fingerprint = value


def compute_report(validation: SiteValidation) -> dict:
    """What the report page shows and what adoption is judged on, from the validation model version's results."""
    from ml.statistics.intervals import auc_score_interval
    from ml.statistics.metrics import reliability_table, roc_auc

    evidence = gather_evidence(validation)
    statuses = [case.study.status for case in evidence.cases]
    y, p = _labels_and_probabilities(evidence.independent)
    report: dict = {
        "format": REPORT_FORMAT,
        "model_version": validation.model_version,
        "cases": len(evidence.cases),
        "scored": evidence.scored,
        "rejected": statuses.count(Study.Status.REJECTED),
        "failed": statuses.count(Study.Status.FAILED),
        "unlabelled": _unlabelled(validation),
        "min_per_class": settings.SITE_VALIDATION_MIN_PER_CLASS,
        "min_auc_lower_bound": settings.SITE_VALIDATION_MIN_AUC,
        "training_overlap": _overlap_section(evidence),
        "n_pneumonia": int(y.sum()),
        "n_normal": int((~y).sum()),
        "threshold": float(model_card().get("threshold", 0.5)),
    }
    outside = [result.population == Study.Population.OUTSIDE for _, result in evidence.independent]
    report["outside_share"] = sum(outside) / len(outside) if outside else None
    if y.sum() >= 2 and (~y).sum() >= 2:
        auc = roc_auc(y, p)
        report.update(
            {
                "auc": auc,
                "auc_ci": list(auc_score_interval(auc, int(y.sum()), int((~y).sum()))),
                "auc_ci_method": "Newcombe score interval (method 5)",
                "at_threshold": _defined(operating_figures(y, p, report["threshold"])),
                "proposals": [_defined(proposal(y, p, target)) for target in PROPOSED_TARGETS],
                "subgroups": _defined(subgroups(evidence.independent, report["threshold"])),
                "calibration": reliability_table(y, p, bins=10),
                "roc": _roc_points(y, p),
                "prevalence": float(y.mean()),
            }
        )
    report["refusals"] = _refusals(report)
    report["verdict"] = _verdict(report)
    # Stored in English with the report (the audit trail and the command line read it);
    # pages show ``verdict_message`` in the reader's language.
    with override("en"):
        report["message"] = verdict_message(report)
    return report


AGE_BANDS = ((1.0, "< 1 y"), (6.0, "1–5 y"), (18.0, "6–17 y"), (65.0, "18–64 y"), (float("inf"), "≥ 65 y"))
UNKNOWN = "unknown"


def _age_band(study: Study) -> str:
    from ml.serving.population import parse_dicom_age

    years = parse_dicom_age(study.patient_age).years if study.patient_age else study.declared_age_years
    if years is None:
        return UNKNOWN
    return next(label for limit, label in AGE_BANDS if years < limit)


def _source_folder(study: Study) -> str:
    """The folder above NORMAL/ or PNEUMONIA/ in the stored name (``site.zip/ward-3/NORMAL/a.jpeg``: ward-3)."""
    parts = study.original_name.replace("\\", "/").split("/")[:-1]
    labelled = [i for i, part in enumerate(parts) if part.upper() in LABELS]
    return parts[labelled[-1] - 1] if labelled and labelled[-1] > 0 else UNKNOWN


# Each subgroup dimension as the page and the PDF name it.
SUBGROUP_TITLES = {
    "age_band": gettext_lazy("age"),
    "view": gettext_lazy("view"),
    "sex": gettext_lazy("sex"),
    "manufacturer": gettext_lazy("manufacturer"),
    "source": gettext_lazy("source folder"),
}
SUBGROUPS = {
    "age_band": _age_band,
    "view": lambda study: study.view_position.upper() or UNKNOWN,
    "sex": lambda study: study.patient_sex.upper() or UNKNOWN,
    "manufacturer": lambda study: study.manufacturer or UNKNOWN,
    "source": _source_folder,
}


def subgroups(scored: list[tuple[SiteValidationCase, Result]], threshold: float) -> dict[str, list[dict]]:
    """Figures per subgroup, for each dimension where at least one case says something (the rest: unknown).

    A dimension whose cases all fall in one group is kept (it says which group
    the figures above describe); AUC needs two cases of each class in a group.
    """
    from ml.statistics.intervals import auc_score_interval
    from ml.statistics.metrics import roc_auc

    table = {}
    for dimension, group_of in SUBGROUPS.items():
        groups: dict[str, list[tuple[SiteValidationCase, Result]]] = {}
        for case, result in scored:
            source = case.study.duplicate_of if case.study.duplicate_of_id else case.study
            groups.setdefault(group_of(source), []).append((case, result))
        if set(groups) == {UNKNOWN}:
            continue
        rows = []
        for name in sorted(groups, key=lambda g: (g == UNKNOWN, g)):
            y, p = _labels_and_probabilities(groups[name])
            row = {"group": name, "n_pneumonia": int(y.sum()), "n_normal": int((~y).sum())}
            if y.sum() >= 2 and (~y).sum() >= 2:
                auc = roc_auc(y, p)
                row.update({"auc": auc, "auc_ci": list(auc_score_interval(auc, int(y.sum()), int((~y).sum())))})
            row.update({k: v for k, v in operating_figures(y, p, threshold).items() if k in _SUBGROUP_FIGURES})
            rows.append(row)
        table[dimension] = rows
    return table


_SUBGROUP_FIGURES = ("sensitivity", "specificity", "ci", "confusion")


def operating_figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Confusion counts, sensitivity, specificity, PPV and NPV at ``threshold``, each with its exact 95 % CI."""
    from ml.statistics.intervals import clopper_pearson
    from ml.statistics.metrics import at_threshold

    figures = at_threshold(y, p, threshold)
    c = figures["confusion"]
    figures["ci"] = {
        "sensitivity": list(clopper_pearson(c["tp"], c["tp"] + c["fn"])),
        "specificity": list(clopper_pearson(c["tn"], c["tn"] + c["fp"])),
        "ppv": list(clopper_pearson(c["tp"], c["tp"] + c["fp"])),
        "npv": list(clopper_pearson(c["tn"], c["tn"] + c["fn"])),
    }
    return figures


def proposal(y: np.ndarray, p: np.ndarray, target: float) -> dict:
    """The operating point adoption would set for ``target``, or how many pneumonia cases it would need."""
    from ml.statistics.intervals import clopper_pearson, pneumonia_needed, sensitivity_threshold

    found = sensitivity_threshold(y, p, target)
    n = int(y.sum())
    if found is None:
        return {
            "target": target,
            "threshold": None,
            "best_lower_bound": clopper_pearson(n, n)[0] if n else 0.0,
            "pneumonia_needed": pneumonia_needed(target),
        }
    return {"target": target, **operating_figures(y, p, found[0])}


def _overlap_section(evidence: Evidence) -> dict:
    from ml.serving.fingerprint import MATCH_MAX_BITS

    matched = sorted(evidence.training, key=lambda item: item[0].study.original_name)
    return {
        "checked": evidence.checked,
        "unchecked": len(evidence.unchecked),
        "matched": len(matched),
        "share": len(matched) / evidence.checked if evidence.checked else None,
        "max_share": MAX_TRAINING_SHARE,
        "max_bits": MATCH_MAX_BITS,
        "fingerprints_shipped": training_fingerprints() is not None,
        "cases": [
            {
                "study": case.study_id,
                "name": case.study.original_name,
                "training_image": match.training_image,
                "bits": match.distance,
            }
            for case, _, match in matched[:OVERLAP_CASES_LISTED]
        ],
    }


def _refusals(report: dict) -> list[str]:
    """Why the report does not allow adoption, most basic first; empty when it does."""
    refusals = []
    overlap = report["training_overlap"]
    if min(report["n_pneumonia"], report["n_normal"]) < report["min_per_class"]:
        refusals.append("too_few")
    if overlap["share"] is not None and overlap["share"] > overlap["max_share"]:
        refusals.append("training_overlap")
    if not overlap["fingerprints_shipped"]:
        refusals.append("no_fingerprints")
    elif report["scored"] and overlap["unchecked"] / report["scored"] > overlap["max_share"]:
        refusals.append("unchecked")
    if "auc" in report and report["auc_ci"][0] < report["min_auc_lower_bound"]:
        refusals.append("auc_low")
    return refusals


def _verdict(report: dict) -> str:
    if "auc" not in report:
        return "insufficient"
    if "auc_low" in report["refusals"]:
        return "not_reliable"
    return "not_adoptable" if report["refusals"] else "adoptable"


def verdict_label(report: dict | None) -> str:
    """The report's verdict in a word or two, in the active language."""
    verdict = (report or {}).get("verdict", "running")
    return str(VERDICTS.get(verdict, verdict))


def verdict_message(report: dict) -> str:
    """The report's conclusion in plain words, in the active language, from the figures it holds."""
    if report.get("format", 1) < REPORT_FORMAT:
        return gettext(
            "This report was computed before adoption required independent cases and exact confidence bounds; "
            "run a new validation to adopt an operating point."
        )
    sentences = []
    if report["verdict"] == "insufficient":
        sentences.append(
            gettext(
                "Only %(pneumonia)d pneumonia and %(normal)d normal cases the model never trained on could be "
                "scored (%(rejected)d rejected, %(failed)d failed): too few to measure the model here."
            )
            % {
                "pneumonia": report["n_pneumonia"],
                "normal": report["n_normal"],
                "rejected": report["rejected"],
                "failed": report["failed"],
            }
        )
    else:
        figures = {
            "auc": number_format(report["auc"], 3),
            "low": number_format(report["auc_ci"][0], 3),
            "high": number_format(report["auc_ci"][1], 3),
            "n": report["n_pneumonia"] + report["n_normal"],
            "bound": number_format(report["min_auc_lower_bound"], 2),
        }
        if "auc_low" in report["refusals"]:
            sentences.append(
                gettext(
                    "AUC %(auc)s (95 %% CI %(low)s–%(high)s) on %(n)d cases: the lower bound is below %(bound)s. "
                    "The model is not shown to work for this site's patients; we recommend not relying on it here."
                )
                % figures
            )
        else:
            sentences.append(
                gettext("AUC %(auc)s (95 %% CI %(low)s–%(high)s) on %(n)d cases: the lower bound reaches %(bound)s.")
                % figures
            )
    sentences += [_refusal_sentence(code, report) for code in report["refusals"] if code != "auc_low"]
    if report["verdict"] == "adoptable":
        sentences.append(gettext("An administrator may adopt a site operating point."))
    elif report["verdict"] != "not_reliable":
        sentences.append(gettext("No site operating point can be adopted from this report."))
    return " ".join(sentences)


def _refusal_sentence(code: str, report: dict) -> str:
    overlap = report["training_overlap"]
    if code == "too_few":
        return gettext(
            "Adoption needs at least %(min)d scored cases of each class that the model never trained on; this "
            "report has %(pneumonia)d pneumonia and %(normal)d normal, so %(more_pneumonia)d more pneumonia and "
            "%(more_normal)d more normal cases are needed."
        ) % {
            "min": report["min_per_class"],
            "pneumonia": report["n_pneumonia"],
            "normal": report["n_normal"],
            "more_pneumonia": max(0, report["min_per_class"] - report["n_pneumonia"]),
            "more_normal": max(0, report["min_per_class"] - report["n_normal"]),
        }
    if code == "training_overlap":
        return gettext(
            "%(matched)d of %(checked)d cases are images the model was trained, calibrated or selected on "
            "(%(share)s %%; at most %(max)s %% is allowed). They are left out of every figure and named in the "
            "report; a validation must use the site's own studies."
        ) % {
            "matched": overlap["matched"],
            "checked": overlap["checked"],
            "share": number_format(100 * overlap["share"], 1),
            "max": number_format(100 * overlap["max_share"], 0),
        }
    if code == "unchecked":
        return gettext(
            "%(unchecked)d cases could not be compared with the model's training images (their original files "
            "are gone or unreadable); at most %(max)s %% may be unchecked."
        ) % {"unchecked": overlap["unchecked"], "max": number_format(100 * overlap["max_share"], 0)}
    if code == "no_fingerprints":
        return gettext(
            "The served model ships no fingerprints of its training images, so no case can be shown to be new to it."
        )
    raise ValueError(f"unknown refusal {code!r}")


def _defined(values):
    """The same figures with undefined ones (NaN) as None, in dicts and lists at any depth."""
    if isinstance(values, dict):
        return {k: _defined(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_defined(v) for v in values]
    return None if isinstance(values, float) and math.isnan(values) else values


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


def operating_point(validation: SiteValidation, target_sensitivity: float) -> dict:
    """What adopting ``target_sensitivity`` would set, on the report's independent cases (see ``proposal``)."""
    y, p = _labels_and_probabilities(gather_evidence(validation).independent)
    return _defined(proposal(y, p, target_sensitivity))


def adopt(validation: SiteValidation, user, *, target_sensitivity: float, prevalence: float | None) -> SiteSetting:
    """Adopt a site operating point from ``validation``; ``AdoptionRefused`` says why not, in plain words."""
    refresh(validation)
    report = validation.report
    if report is None:
        raise AdoptionRefused(gettext("The validation is still running; adopt once every case is finished."))
    if report.get("format", 1) < REPORT_FORMAT or report.get("verdict") != "adoptable":
        raise AdoptionRefused(verdict_message(report))
    if validation.model_version != current_model_version():
        raise AdoptionRefused(
            gettext(
                "This report measured model %(measured)s, but the service now serves %(served)s; run a new validation."
            )
            % {"measured": validation.model_version, "served": current_model_version()}
        )
    if math.isnan(target_sensitivity) or not 0.5 <= target_sensitivity <= 1.0:
        raise AdoptionRefused(gettext("The target sensitivity must be between 0.50 and 1.00."))
    if prevalence is not None:
        if not 0.01 <= prevalence <= 0.99:
            raise AdoptionRefused(gettext("The site prevalence must be between 0.01 and 0.99."))
        if model_card().get("calibration_prevalence") is None:
            raise AdoptionRefused(
                gettext("The served model's card does not say which prevalence it is calibrated for.")
            )
    point = operating_point(validation, target_sensitivity)
    if point["threshold"] is None:
        raise AdoptionRefused(
            gettext(
                "No threshold reaches a sensitivity of %(target)s with 95 %% confidence on these %(n)d pneumonia "
                "cases: even catching every one, the lower bound is %(bound)s. Choose a lower target, or validate "
                "on at least %(needed)d pneumonia cases."
            )
            % {
                "target": number_format(target_sensitivity, 2),
                "n": report["n_pneumonia"],
                "bound": number_format(point["best_lower_bound"], 3),
                "needed": point["pneumonia_needed"],
            }
        )
    with transaction.atomic():
        setting = SiteSetting.objects.create(
            validation=validation,
            model_version=validation.model_version,
            target_sensitivity=target_sensitivity,
            threshold=point["threshold"],
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
            sensitivity_on_report=point["sensitivity"],
            sensitivity_ci=point["ci"]["sensitivity"],
            specificity_on_report=point["specificity"],
            specificity_ci=point["ci"]["specificity"],
            confusion=point["confusion"],
            prevalence=prevalence,
        )
    return setting
