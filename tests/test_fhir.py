"""The FHIR R4 DiagnosticReport: valid, preliminary, coded, and saying what the model said."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydantic import ValidationError

from screening.api.fhir import diagnostic_report
from screening.dicom.objects import DISCLAIMER
from tests.factories import finding

FINDING = finding(
    population="validated",
    population_reason="Declared age 3 years is inside the validated 1-5 years.",
    salient_box=None,
)
ISSUED = datetime.datetime(2024, 5, 2, 10, 30, tzinfo=datetime.UTC)
UID = "1.2.826.0.1.3680043.8.498.87740909655540334695674048344897137570"


def report(**overrides) -> dict:
    arguments = dict(
        study_id=42,
        accession_number="ACC0001",
        study_instance_uid=UID,
        study_date=datetime.date(2024, 5, 1),
        finding=FINDING,
        issued=ISSUED,
        base_url="https://screening.example.org/",
    )
    return diagnostic_report(**{**arguments, **overrides})


def codes(concept: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]]


def observation(d: dict) -> dict:
    (contained,) = d["contained"]
    return contained


def test_it_validates_as_a_diagnostic_report():
    parsed = DiagnosticReport.model_validate(report())

    assert parsed.status == "preliminary"
    assert parsed.contained[0].get_resource_type() == "Observation"


def test_the_validator_would_catch_an_r5_only_field():
    # DiagnosticReport.note exists only from R5: the check above is not vacuous.
    with pytest.raises(ValidationError):
        DiagnosticReport.model_validate({**report(), "note": [{"text": "x"}]})


def test_it_is_coded_as_a_preliminary_radiology_imaging_report():
    d = report()

    assert d["status"] == "preliminary"
    assert codes(d["code"]) == [("http://loinc.org", "18748-4")]
    assert codes(d["category"][0]) == [("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD")]
    assert codes(d["conclusionCode"][0]) == [("http://snomed.info/sct", "233604007")]
    assert d["conclusion"].startswith("Pneumonia suggested by pneumonia-screening v4")
    assert DISCLAIMER in d["conclusion"]
    assert d["issued"] == "2024-05-02T10:30:00+00:00"
    assert d["effectiveDateTime"] == "2024-05-01"
    assert "performer" not in d  # R4 allows no Device there


def test_it_identifies_the_study_three_ways():
    d = report()

    assert d["identifier"] == [{"system": "https://screening.example.org/studies", "value": "42"}]
    (study,) = d["imagingStudy"]
    assert study["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{UID}"}
    (order,) = d["basedOn"]
    assert order["identifier"]["value"] == "ACC0001"
    assert codes(order["identifier"]["type"]) == [("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")]


def test_the_observation_holds_the_probability_and_its_context():
    d = report()
    obs = observation(d)

    assert d["result"] == [{"reference": f"#{obs['id']}", "display": "Probability of pneumonia"}]
    assert obs["status"] == "preliminary"
    assert obs["valueQuantity"] == {"value": 0.873, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"}
    assert obs["interpretation"][0]["coding"][0]["code"] == "POS"
    components = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
    assert components["threshold"]["valueQuantity"]["value"] == 0.42
    assert components["p-viral"]["valueQuantity"]["value"] == 0.3
    assert components["p-shown"]["valueQuantity"]["value"] == 0.61
    assert components["outside-lungs"]["valueQuantity"]["value"] == 0.34
    assert components["population"]["valueString"] == "validated"
    assert obs["device"] == {"display": "pneumonia-screening v4"}
    assert obs["method"]["text"].startswith("pneumonia-screening v4")
    assert obs["note"][0]["text"] == (
        "Population check: validated. Declared age 3 years is inside the validated 1-5 years."
    )


def test_a_normal_finding_gets_the_normal_conclusion():
    normal = dataclasses.replace(FINDING, label="NORMAL", probability=0.12, viral_probability=None)
    d = report(finding=normal)

    DiagnosticReport.model_validate(d)
    assert codes(d["conclusionCode"][0]) == [("http://snomed.info/sct", "17621005")]
    assert d["conclusion"].startswith("No pneumonia detected")
    obs = observation(d)
    assert obs["interpretation"][0]["coding"][0]["code"] == "NEG"
    assert "p-viral" not in {c["code"]["coding"][0]["code"] for c in obs["component"]}


def test_an_unknown_study_date_leaves_out_the_effective_time():
    d = report(study_date=None, accession_number="")

    DiagnosticReport.model_validate(d)
    assert "effectiveDateTime" not in d
    assert "effectiveDateTime" not in observation(d)
    assert "basedOn" not in d  # no accession number, no order to point at


def test_a_naive_issued_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        report(issued=datetime.datetime(2024, 5, 2, 10, 30))
