"""Errors answer in the caller's language: JSON for the API and the upload script, never an HTML page (issue 12)."""

from unittest import mock

from django.db import OperationalError
from django.test import Client

from tests.conftest import XRAYS, named, token_client


def test_a_database_outage_is_a_json_503_with_retry_after(submitter):
    client = token_client(submitter)
    client.raise_request_exception = False
    with mock.patch("screening.selectors.batch_studies", side_effect=OperationalError("connection refused")):
        from screening.models import Batch

        batch = Batch.objects.create(submitted_by=submitter, source=Batch.Source.API)
        response = client.get(f"/api/v1/batches/{batch.pk}")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert "database is unavailable" in response.json()["error"]
    assert response["Retry-After"] == "30"


def test_an_unknown_api_object_is_a_json_404(api):
    response = api.get("/api/v1/batches/999999")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "error": "Not found."}


def test_a_file_name_too_long_to_parse_is_a_json_400(api):
    response = api.post("/api/v1/studies", {"file": named("a" * 1000 + ".jpeg", XRAYS[0].read_bytes())})
    assert response.status_code == 400
    assert "could not be read" in response.json()["error"]


def test_too_many_files_through_the_web_form_is_a_clear_400(submitter, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    client = Client()
    client.force_login(submitter)
    files = [named(f"f{i}.jpeg", b"x") for i in range(4)]
    as_json = client.post("/batches/new/", {"files": files}, HTTP_ACCEPT="application/json")
    assert as_json.status_code == 400
    assert "Too many files" in as_json.json()["error"]
    files = [named(f"f{i}.jpeg", b"x") for i in range(4)]
    page = client.post("/batches/new/", {"files": files})
    assert page.status_code == 400
    assert b"Too many files" in page.content
