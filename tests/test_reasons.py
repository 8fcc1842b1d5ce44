"""Stored English reasons shown in the reader's language: every sentence the service writes is known."""

from __future__ import annotations

import re

import pytest
from django.utils import translation

from ml.serving import decode, gate, population
from screening import reasons
from screening.models import Study
from tests.conftest import FIXTURES, logged_in
from tests.factories import batch_for, scored_study

VALIDATED = population.AgeRange(1, 5)
# English words that no translated reason may keep (DICOM attribute names and codes may stay).
ENGLISH = re.compile(r"\b(the|is|not|age|ages|image|file|model|validated|ignored|declared|looks|scored)\b")


def decode_reasons() -> list[str]:
    out = []
    for path in sorted((FIXTURES / "bad").iterdir()):
        try:
            decode.decode(path)
        except decode.UnscorableInput as exc:
            out.append(str(exc))
    return out


def population_reasons() -> list[str]:
    decide = population.decide
    return [
        v.reason
        for v in [
            decide(VALIDATED, dicom={"PatientAge": "045Y"}),
            decide(VALIDATED, dicom={"PatientAge": "018M"}),
            decide(VALIDATED, dicom={"PatientAge": "45"}, declared_age=3),
            decide(VALIDATED, dicom={"PatientAge": "999Y"}, declared_group="adult"),
            decide(VALIDATED, dicom={"PatientBirthDate": "20250101", "StudyDate": "20240101"}, declared_age=0.5),
            decide(VALIDATED, dicom={"PatientBirthDate": "2025-01-01", "StudyDate": "x"}),
            decide(VALIDATED, declared_group="pediatric", adult_probability=0.93, adult_threshold=0.2),
            decide(VALIDATED, declared_group="pediatric"),
            decide(VALIDATED, adult_probability=0.93, adult_threshold=0.2),
            decide(VALIDATED, adult_probability=0.01, adult_threshold=0.2),
        ]
    ]


def status_reasons() -> list[str]:
    return (
        decode_reasons()
        + [gate.reason_for(kind) for kind in [*gate.LOOKS_LIKE, "something else"]]
        + [decode._too_big_reason(50 * 1024 * 1024), decode._bomb_reason(100_000_000)]
        + list(decode._CORRUPT_REASON.values())
        + ["The DICOM image is compressed with JPEG Extended, which this service cannot decode."]
        + ["This is an MR image; the service screens chest radiographs (CR/DX) only."]
        + upload_refusals()
    )


def upload_refusals() -> list[str]:
    """What intake's acceptance and submission write into a batch's upload report, read from their source."""
    from pathlib import Path

    from screening.intake import acceptance
    from screening.intake.submission import _quota_message

    source = Path(acceptance.__file__).read_text()
    constant = re.findall(r'Refusal\(\s*\w+,\s*"([^"]+)",?\s*\)', source)
    assert len(set(constant)) >= 8, "the pattern no longer finds intake's refusals"
    return sorted(set(constant)) + [
        "File is larger than the 50 MB limit.",
        "Batch limit of 500 files reached; file not accepted.",
        "Zip archive would expand to 2100 MB, over the 2048 MB limit; split it into smaller archives.",
        "Same content as a.jpeg; stored once.",
        _quota_message(),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["zh-hans", "es"])
def test_every_stored_sentence_the_service_writes_is_translated(language):
    texts = status_reasons()
    assert len(decode_reasons()) >= 8, "the bad fixtures should exercise the decoder's refusals"
    with translation.override(language):
        for text in texts:
            shown = reasons.status_message(text)
            assert shown != text, (text, shown)
            assert not ENGLISH.search(shown), (text, shown)
        for text in population_reasons():
            shown = reasons.population_reason(text)
            assert shown != text, (text, shown)
            assert not ENGLISH.search(shown), (text, shown)


def test_the_parts_a_reason_was_built_from_are_kept():
    with translation.override("zh-hans"):
        assert "45" in reasons.population_reason(population.decide(VALIDATED, dicom={"PatientAge": "045Y"}).reason)
        assert "'45'" in reasons.population_reason(
            population.decide(VALIDATED, dicom={"PatientAge": "45"}, declared_age=3).reason
        )
        assert "50 MB" in reasons.status_message(decode._too_big_reason(50 * 1024 * 1024))
        assert "侧放" in reasons.status_message(gate.reason_for("rotated"))


def test_english_is_shown_as_stored_and_an_unknown_sentence_passes_through():
    text = "This is an MR image; the service screens chest radiographs (CR/DX) only."
    with translation.override("en"):
        assert reasons.status_message(text) == text
    with translation.override("es"):
        assert reasons.status_message("Something new went wrong.") == "Something new went wrong."
        assert reasons.status_message("") == ""


def test_the_study_page_shows_the_stored_reason_in_the_readers_language(submitter, radiologist):
    study = scored_study(batch_for(submitter), 0.9)
    reason = population.decide(VALIDATED, declared_group="adult").reason
    Study.objects.filter(pk=study.pk).update(population=Study.Population.OUTSIDE, population_reason=reason)
    client = logged_in(radiologist)
    chinese = client.get(f"/studies/{study.pk}/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "申报为成人" in chinese
    assert reason not in chinese
    english = logged_in(radiologist).get(f"/studies/{study.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert reason in english


def test_the_batch_page_shows_upload_refusals_in_the_readers_language(submitter):
    batch = batch_for(submitter)
    refusal = "Not a JPEG, PNG or DICOM file (judged by its content, not its name)."
    batch.upload_report = [{"file": "notes.jpg", "error": refusal}]
    batch.save(update_fields=["upload_report"])
    page = logged_in(submitter).get(f"/batches/{batch.pk}/", HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "No es un archivo JPEG, PNG ni DICOM" in page
    assert refusal not in page


def test_the_banner_names_the_validated_population_in_the_readers_language(radiologist):
    chinese = logged_in(radiologist).get("/worklist/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    assert "儿童正位胸部X光片（1–5 岁，广州的一家医院）" in chinese
    english = logged_in(radiologist).get("/worklist/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "pediatric frontal chest X-rays (ages 1–5, one hospital in Guangzhou)" in english
