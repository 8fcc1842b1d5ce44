"""The screening result as a FHIR R4 DiagnosticReport, for systems that read FHIR rather than DICOM.

A pure function returning a JSON-ready dict. It is R4 (what EHR interfaces
speak); the tests validate it with ``fhir.resources.R4B``, the nearest
version the package ships, whose DiagnosticReport and Observation have the
same shape as R4's. Nothing R5-only is used.

Choices worth knowing:

- ``code`` is LOINC 18748-4 "Diagnostic imaging study", the generic imaging
  report code. LOINC 36554-4 "XR Chest Single view" was considered, but it
  names the procedure, and a study we score may have been ordered as two views.
- ``status`` is ``preliminary``: no person has verified the result.
- The study is not a FHIR resource we can point to, so ``imagingStudy`` and
  ``basedOn`` are logical references (R4 ``Reference.identifier``): the
  StudyInstanceUID as ``urn:dicom:uid`` / ``urn:oid:<uid>`` (how ImagingStudy
  identifies itself) and the accession number with identifier type ACSN on the
  order it fulfils. The report's own identifier is our study id.
- ``performer`` is left out: R4 allows only people, roles, organisations and
  care teams there, not a Device. The model appears as the Observation's
  ``device`` and ``method``.
- ``conclusionCode`` is SNOMED 233604007 "Pneumonia" or 17621005 "Normal"
  (with text saying it means "no pneumonia detected", not "nothing abnormal").
- Probabilities are fractions in [0, 1] with UCUM unit "1". Concepts with no
  standard code (probability of pneumonia, threshold, ...) use our code system
  ``<base_url>/fhir/CodeSystem/pneumonia-screening``; they match the ``99PNEUMO``
  codes of the DICOM SR (``screening.dicom.objects``).
"""

from __future__ import annotations

import datetime

from screening.dicom.objects import DISCLAIMER, NORMAL, PNEUMONIA, Finding

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

OBSERVATION_ID = "pneumonia-probability"


def _coding(system: str, code: str, display: str) -> dict:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict:
    concept = {"coding": [_coding(system, code, display)]}
    if text:
        concept["text"] = text
    return concept


def _fraction(value: float) -> dict:
    return {"value": round(float(value), 6), "unit": "1", "system": UCUM, "code": "1"}


def _local_codes(base_url: str) -> str:
    return f"{base_url}/fhir/CodeSystem/pneumonia-screening"


def _component(system: str, code: str, display: str, value: float) -> dict:
    return {"code": _concept(system, code, display), "valueQuantity": _fraction(value)}


def _observation(finding: Finding, local: str, effective: str | None, issued: str) -> dict:
    """The probability of pneumonia, with the threshold and optional probabilities as components."""
    components = [_component(local, "threshold", "Operating threshold", finding.threshold)]
    if finding.viral_probability is not None:
        components.append(
            _component(local, "p-viral", "Probability of viral cause given pneumonia", finding.viral_probability)
        )
    if finding.shown_probability is not None:
        components.append(
            _component(local, "p-shown", "Probability of pneumonia at site prevalence", finding.shown_probability)
        )
    if finding.evidence_outside_lungs is not None:
        components.append(
            _component(
                local, "outside-lungs", "Share of the evidence outside the lung fields", finding.evidence_outside_lungs
            )
        )
    if finding.population:
        components.append(
            {"code": _concept(local, "population", "Population check"), "valueString": finding.population}
        )
    positive = finding.label == PNEUMONIA
    model = f"{finding.model_name} {finding.model_version}"
    observation = {
        "resourceType": "Observation",
        "id": OBSERVATION_ID,
        "status": "preliminary",
        "category": [_concept(OBSERVATION_CATEGORY, "imaging", "Imaging")],
        "code": _concept(local, "p-pneumonia", "Probability of pneumonia", "Probability of pneumonia"),
        "issued": issued,
        "valueQuantity": _fraction(finding.probability),
        "interpretation": [
            _concept(INTERPRETATION, "POS", "Positive") if positive else _concept(INTERPRETATION, "NEG", "Negative")
        ],
        "method": {"text": f"{model}: calibrated classifier; label {finding.label} at threshold {finding.threshold}"},
        "device": {"display": model},
        "component": components,
    }
    if effective:
        observation["effectiveDateTime"] = effective
    notes = []
    if finding.population:
        notes.append(
            f"Population check: {finding.population}"
            + (f". {finding.population_reason}" if finding.population_reason else "")
        )
    notes.append(DISCLAIMER)
    observation["note"] = [{"text": text} for text in notes]
    return observation


def _conclusion_code(label: str) -> dict:
    if label == PNEUMONIA:
        return _concept(SNOMED, "233604007", "Pneumonia", "Pneumonia suggested by the model")
    return _concept(SNOMED, "17621005", "Normal", "No pneumonia detected by the model")


def diagnostic_report(
    *,
    study_id: int,
    accession_number: str,
    study_instance_uid: str,
    study_date: datetime.date | None,
    finding: Finding,
    issued: datetime.datetime,
    base_url: str,
) -> dict:
    """A preliminary R4 DiagnosticReport of one scored study, its Observation contained.

    ``issued`` must be timezone-aware (FHIR instants carry an offset);
    ``base_url`` is the service's public root, without a trailing slash.
    """
    if finding.label not in (PNEUMONIA, NORMAL):
        raise ValueError(f"finding label must be {PNEUMONIA} or {NORMAL}, not {finding.label!r}")
    if issued.tzinfo is None or issued.utcoffset() is None:
        raise ValueError("issued must be timezone-aware: a FHIR instant carries its offset")
    base_url = base_url.rstrip("/")
    issued_text = issued.isoformat()
    effective = study_date.isoformat() if study_date else None
    label_text = "Pneumonia suggested" if finding.label == PNEUMONIA else "No pneumonia detected"
    report = {
        "resourceType": "DiagnosticReport",
        "contained": [_observation(finding, _local_codes(base_url), effective, issued_text)],
        "identifier": [{"system": f"{base_url}/studies", "value": str(study_id)}],
        "status": "preliminary",
        "category": [_concept(V2_0074, "RAD", "Radiology")],
        "code": _concept(LOINC, "18748-4", "Diagnostic imaging study", "AI pneumonia screening of a chest X-ray"),
        "issued": issued_text,
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_instance_uid}"},
            }
        ],
        "result": [{"reference": f"#{OBSERVATION_ID}", "display": "Probability of pneumonia"}],
        "conclusion": (
            f"{label_text} by {finding.model_name} {finding.model_version} "
            f"(probability {finding.probability:.2f}, threshold {finding.threshold:.2f}). {DISCLAIMER}"
        ),
        "conclusionCode": [_conclusion_code(finding.label)],
    }
    if accession_number:
        report["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {"type": _concept(V2_0203, "ACSN", "Accession ID"), "value": accession_number},
            }
        ]
    if effective:
        report["effectiveDateTime"] = effective
    return report
