"""Outside the validated population: declared, read from DICOM, shown in its own lane, never silently validated."""

import csv
import io
import json

import pydicom
import pytest
from django.core.management import CommandError, call_command

from screening.intake.submission import submit
from screening.models import Batch, Result, Study
from screening.population import Declaration
from tests.conftest import FIXTURES, XRAYS, logged_in, named
from tests.factories import batch_for, scored_study
from worker.scoring import score_chunk

MONO2 = FIXTURES / "bad" / "mono2.dcm"  # a frontal DX with PatientAge 045Y


def dicom_with(**attributes) -> bytes:
    dataset = pydicom.dcmread(MONO2)
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def screener(served_explainer):
    return served_explainer


@pytest.fixture
def gate(served_gate):
    return served_gate


def scored(user, screener, gate, files, **submit_options):
    from worker.loaded_models import get_population_check

    outcome = submit(user, Batch.Source.API, [(n, io.BytesIO(d)) for n, d in files], **submit_options)
    score_chunk([s.pk for s in outcome.studies], screener, gate, get_population_check())
    return {s.original_name: s for s in Study.objects.filter(batch=outcome.batch)}


# --- Verdicts from the real scoring path ---------------------------------------------------------


def test_a_dicom_aged_45_is_outside_and_one_aged_3_is_validated(submitter, screener, gate, publish):
    studies = scored(
        submitter,
        screener,
        gate,
        [("adult.dcm", MONO2.read_bytes()), ("child.dcm", dicom_with(PatientAge="003Y"))],
    )
    adult, child = studies["adult.dcm"], studies["child.dcm"]
    assert adult.status == child.status == Study.Status.DONE
    assert adult.population == Study.Population.OUTSIDE
    assert "45 y" in adult.population_reason
    assert child.population == Study.Population.VALIDATED
    assert "3 y" in child.population_reason
    result = adult.results.get()
    assert (result.population, result.population_source) == ("outside", "dicom_age")


def test_a_birth_date_gives_the_age_and_is_not_kept(submitter, screener, gate, publish):
    data = dicom_with(PatientAge=None, PatientBirthDate="19700101", StudyDate="20240101")
    study = scored(submitter, screener, gate, [("born1970.dcm", data)])["born1970.dcm"]
    assert study.population == Study.Population.OUTSIDE
    assert "54 y" in study.population_reason
    stored = json.dumps([list(r.values()) for r in Study.objects.filter(pk=study.pk).values()], default=str)
    assert "19700101" not in stored
    assert "19700101" not in study.population_reason


@pytest.mark.parametrize("age", ["45", "045X", "999Y"])
def test_a_malformed_dicom_age_never_fails_the_study(submitter, screener, gate, publish, age):
    study = scored(submitter, screener, gate, [("odd.dcm", dicom_with(PatientAge=age))], declaration=None)["odd.dcm"]
    assert study.status == Study.Status.DONE
    assert study.population in ("validated", "outside")
    assert "ignored" in study.population_reason
    assert age in study.population_reason


def test_a_declared_adult_batch_is_outside(submitter, screener, gate, publish):
    studies = scored(
        submitter, screener, gate, [(XRAYS[0].name, XRAYS[0].read_bytes())], declaration=Declaration("adult")
    )
    study = studies[XRAYS[0].name]
    assert study.declared_population == "adult"
    assert study.population == Study.Population.OUTSIDE
    assert "declared adult" in study.population_reason


def test_the_same_file_declared_differently_is_scored_again(submitter, screener, gate, publish):
    data = [(XRAYS[1].name, XRAYS[1].read_bytes())]
    first = scored(submitter, screener, gate, data, declaration=Declaration(age_years=3))[XRAYS[1].name]
    again = scored(submitter, screener, gate, data, declaration=Declaration(age_years=3))[XRAYS[1].name]
    other = scored(submitter, screener, gate, data, declaration=Declaration("adult"))[XRAYS[1].name]
    assert again.duplicate_of_id == first.pk
    assert again.population == "validated"
    assert other.duplicate_of_id is None
    assert other.population == "outside"
    assert other.results.count() == 1


# --- Declarations at every door: API, web form, command line ---------------------------------------


def test_the_api_takes_a_declaration_and_refuses_a_bad_one_clearly(api, publish):
    ok = api.post("/api/v1/studies", {"file": io.BytesIO(XRAYS[0].read_bytes()), "population": "adult"})
    assert ok.status_code == 202
    assert Study.objects.get(pk=ok.json()["studies"][0]["id"]).declared_population == "adult"
    aged = api.post("/api/v1/batches", {"files": [io.BytesIO(XRAYS[1].read_bytes())], "age": "4"})
    assert Study.objects.get(pk=aged.json()["studies"][0]["id"]).declared_age_years == 4.0
    for field, value, words in [("age", "forty", "not a number"), ("population", "elderly", "not one of")]:
        response = api.post("/api/v1/studies", {"file": io.BytesIO(XRAYS[2].read_bytes()), field: value})
        assert response.status_code == 400
        assert words in response.json()["error"]
    assert Study.objects.count() == 2


def test_the_upload_form_refuses_a_bad_age_with_a_message(submitter, publish):

    client = logged_in(submitter)
    response = client.post(
        "/batches/new/",
        {"files": [named("a.jpeg", XRAYS[0].read_bytes())], "age": "abc"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert "not a number of years" in response.json()["error"]
    assert not Study.objects.exists()
    good = client.post(
        "/batches/new/",
        {"files": [named("a.jpeg", XRAYS[0].read_bytes())], "population": "adult"},
        HTTP_ACCEPT="application/json",
    )
    assert good.status_code == 202
    assert Study.objects.get().declared_population == "adult"


def test_submit_folder_declares_and_refuses_a_bad_declaration(submitter, tmp_path, publish):
    (tmp_path / XRAYS[0].name).write_bytes(XRAYS[0].read_bytes())
    with pytest.raises(CommandError, match="not a number of years"):
        call_command("submit_folder", str(tmp_path), "--user", "sam", "--age", "old")
    with pytest.raises(CommandError, match="not one of"):
        call_command("submit_folder", str(tmp_path), "--user", "sam", "--population", "elderly")
    assert not Study.objects.exists()
    call_command("submit_folder", str(tmp_path), "--user", "sam", "--population", "adult", stdout=io.StringIO())
    assert Study.objects.get().declared_population == "adult"


# --- What radiologists and exports see ------------------------------------------------------------


@pytest.fixture
def lanes(submitter, settings):
    batch = batch_for(submitter)
    validated = scored_study(batch, 0.90, population="validated", population_reason="patient age 3 y")
    outside_high = scored_study(
        batch, 0.999, population="outside", population_reason="the image looks like an adult chest X-ray (0.98)"
    )
    outside_low = scored_study(batch, 0.20, population="outside", population_reason="declared adult")
    Result.objects.filter(study__in=[outside_high, outside_low]).update(population="outside")
    legacy = scored_study(batch, 0.50)  # scored before verdicts existed
    return {"validated": validated, "outside_high": outside_high, "outside_low": outside_low, "legacy": legacy}


def ids(client, **params):
    response = client.get("/worklist/", params)
    assert response.status_code == 200
    return [s.pk for s in response.context["page"]], response


def test_outside_studies_have_their_own_lane_and_never_sit_among_validated_positives(radiologist, lanes):
    client = logged_in(radiologist)
    main, page = ids(client)
    assert main == [lanes["validated"].pk, lanes["legacy"].pk]
    outside, page = ids(client, tab="outside")
    assert set(outside) == {lanes["outside_high"].pk, lanes["outside_low"].pk}
    assert page.context["counts"]["outside"] == 2
    assert page.context["counts"]["to-review"] == 2
    html = page.content.decode()
    assert "not validated for this patient" in html
    assert "looks like an adult chest X-ray" in html
    assert 'class="status-done flagged"' not in html  # never coloured as a positive
    # Filters cannot pull an outside positive into the main lane either.
    assert lanes["outside_high"].pk not in ids(client, label="PNEUMONIA")[0]


def test_the_study_page_says_it_is_outside(radiologist, lanes):
    page = logged_in(radiologist).get(f"/studies/{lanes['outside_high'].pk}/").content.decode()
    assert "Outside the validated population" in page
    assert "not validated for this patient" in page


def test_reviewing_an_outside_study_opens_the_next_outside_one(radiologist, lanes):
    response = logged_in(radiologist).post(
        f"/studies/{lanes['outside_high'].pk}/", {"agrees_with_model": "no", "finding": "normal"}
    )
    assert response.status_code == 302
    assert response.url == f"/studies/{lanes['outside_low'].pk}/"


def test_api_and_csv_carry_the_verdict(api, radiologist, lanes, submitter):
    body = api.get(f"/api/v1/studies/{lanes['outside_high'].pk}").json()
    assert body["population"] == "outside"
    assert "adult" in body["population_reason"]
    legacy = api.get(f"/api/v1/studies/{lanes['legacy'].pk}").json()
    assert legacy["population"] is None
    assert legacy["population_reason"] is None
    export = logged_in(radiologist).get("/worklist/export.csv", {"tab": "outside"})
    text = b"".join(export.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert {r["population"] for r in rows} == {"outside"}
    assert all(r["population_reason"] for r in rows)


# --- The image-based check on real films -----------------------------------------------------------

ADULTS = sorted((FIXTURES / "adult").glob("*.jpeg"))


def test_adult_films_are_outside_and_the_pediatric_fixtures_validated_by_the_image_check(
    submitter, screener, gate, publish
):
    files = [(p.name, p.read_bytes()) for p in ADULTS + XRAYS]
    studies = scored(submitter, screener, gate, files)
    for path in ADULTS:
        study = studies[path.name]
        assert study.status == Study.Status.DONE
        assert study.population == "outside"
        assert "looks like an adult" in study.population_reason
        result = study.results.get()
        assert result.population_source == "image_check"
        assert result.population_check_version == "population-v1"
        assert result.adult_probability >= 0.5
    for path in XRAYS:
        assert studies[path.name].population == "validated", studies[path.name].population_reason
