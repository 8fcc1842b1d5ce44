"""The JSON API: authentication, visibility, submission and progress."""

import io
import json
import zipfile

import pytest
from django.test import Client

from screening.models import Batch, Result, Study
from screening.queue import ROUTINE_QUEUE
from tests.conftest import XRAYS, named, token_client


@pytest.fixture(autouse=True)
def no_broker(publish):
    """These tests check the API, not the queue: publishing is recorded, not sent."""
    return publish


def test_anonymous_calls_get_401_with_a_hint():
    for method, url in [
        ("get", "/api/v1/batches/1"),
        ("get", "/api/v1/studies/1"),
        ("post", "/api/v1/batches"),
        ("post", "/api/v1/studies"),
    ]:
        response = getattr(Client(), method)(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == "Token"
        assert "Token" in response.json()["error"]


def test_a_wrong_token_gets_401(db):
    response = Client(HTTP_AUTHORIZATION="Token not-a-real-key").get("/api/v1/batches/1")
    assert response.status_code == 401


def test_submit_one_study_answers_202_with_ids(api, django_capture_on_commit_callbacks, no_broker):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/studies", {"file": named("chest.jpeg", XRAYS[0].read_bytes())})
    assert response.status_code == 202
    body = response.json()
    study = Study.objects.get(pk=body["studies"][0]["id"])
    assert body["batch"] == study.batch_id
    assert study.status == Study.Status.QUEUED
    no_broker.assert_called_once_with([study.pk], ROUTINE_QUEUE)


def test_submit_study_refuses_several_files(api):
    response = api.post(
        "/api/v1/studies", {"file": [named("a.jpeg", XRAYS[0].read_bytes()), named("b.jpeg", XRAYS[1].read_bytes())]}
    )
    assert response.status_code == 400
    assert "exactly one" in response.json()["error"]


def test_submit_batch_of_files_and_zip_reports_refusals(api):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("z1.jpeg", XRAYS[2].read_bytes())
        bundle.writestr("../evil.jpeg", XRAYS[3].read_bytes())
    payload = {
        "files": [
            named("a.jpeg", XRAYS[0].read_bytes()),
            named("empty.png", b""),
            named("set.zip", archive.getvalue()),
        ]
    }
    response = api.post("/api/v1/batches", payload)
    assert response.status_code == 202
    body = response.json()
    assert [s["file"] for s in body["studies"]] == ["a.jpeg", "set.zip/z1.jpeg"]
    assert {r["file"] for r in body["refused"]} == {"empty.png", "set.zip/../evil.jpeg"}


def test_a_batch_with_nothing_acceptable_is_a_400_and_leaves_no_rows(api):
    response = api.post("/api/v1/batches", {"files": [named("x.jpg", b"not an image")]})
    assert response.status_code == 400
    assert response.json()["refused"][0]["file"] == "x.jpg"
    assert Batch.objects.count() == 0


def test_a_radiologist_may_not_submit(radiologist):
    response = token_client(radiologist).post("/api/v1/studies", {"file": named("a.jpeg", XRAYS[0].read_bytes())})
    assert response.status_code == 403


def test_batch_progress_and_results(api, submitter):
    body = api.post("/api/v1/batches", {"files": [named(p.name, p.read_bytes()) for p in XRAYS[:3]]}).json()
    done, failed, waiting = body["studies"]
    Study.objects.filter(pk=done["id"]).update(status=Study.Status.DONE)
    Result.objects.create(
        study_id=done["id"],
        model_version="v-test",
        probability=0.91,
        label="PNEUMONIA",
        threshold=0.4,
        inference_ms=3.0,
    )
    Study.objects.filter(pk=failed["id"]).update(status=Study.Status.FAILED, status_message="Truncated file.")

    batch = api.get(f"/api/v1/batches/{body['batch']}").json()
    assert batch["progress"]["total"] == 3
    assert batch["progress"]["finished"] == 2
    assert batch["progress"]["DONE"] == 1
    assert batch["progress"]["FAILED"] == 1
    by_id = {s["id"]: s for s in batch["studies"]}
    assert by_id[done["id"]]["result"]["probability"] == 0.91
    assert by_id[done["id"]]["result"]["label"] == "PNEUMONIA"
    assert by_id[failed["id"]]["error"] == "Truncated file."
    assert by_id[failed["id"]]["result"] is None

    study = api.get(f"/api/v1/studies/{done['id']}").json()
    assert study["result"]["model_version"] == "v-test"
    json.dumps(study)  # plain JSON all the way down


def test_another_submitters_batch_and_study_are_404(api, other_submitter):
    theirs = (
        token_client(other_submitter).post("/api/v1/studies", {"file": named("t.jpeg", XRAYS[0].read_bytes())}).json()
    )
    assert api.get(f"/api/v1/batches/{theirs['batch']}").status_code == 404
    assert api.get(f"/api/v1/studies/{theirs['studies'][0]['id']}").status_code == 404
    assert api.get("/api/v1/batches/999999").status_code == 404


def test_radiologists_and_auditors_see_every_study(api, radiologist, auditor):
    mine = api.post("/api/v1/studies", {"file": named("m.jpeg", XRAYS[0].read_bytes())}).json()
    for user in (radiologist, auditor):
        assert token_client(user).get(f"/api/v1/studies/{mine['studies'][0]['id']}").status_code == 200


def test_an_outsider_sees_nothing_and_cannot_submit(api, outsider):
    mine = api.post("/api/v1/studies", {"file": named("m.jpeg", XRAYS[0].read_bytes())}).json()
    client = token_client(outsider)
    assert client.get(f"/api/v1/batches/{mine['batch']}").status_code == 404
    assert client.post("/api/v1/studies", {"file": named("m.jpeg", XRAYS[0].read_bytes())}).status_code == 403


def test_get_accepts_the_web_session(submitter, api):
    mine = api.post("/api/v1/studies", {"file": named("m.jpeg", XRAYS[0].read_bytes())}).json()
    client = Client()
    client.force_login(submitter)
    assert client.get(f"/api/v1/batches/{mine['batch']}").status_code == 200
    assert client.post("/api/v1/studies", {"file": named("m.jpeg", XRAYS[0].read_bytes())}).status_code == 401


def test_too_many_files_in_one_request_is_a_clear_400(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    response = api.post("/api/v1/batches", {"files": [named(p.name, p.read_bytes()) for p in XRAYS[:3]]})
    assert response.status_code == 400
    assert "Too many files" in response.json()["error"]


def test_garbage_requests_never_500(api):
    assert (
        api.post(
            "/api/v1/batches", data=b"\x00\xff garbage", content_type="multipart/form-data; boundary=zz"
        ).status_code
        == 400
    )
    assert api.post("/api/v1/studies", data="{}", content_type="application/json").status_code == 400
    assert api.get("/api/v1/studies/1").status_code == 404


def test_a_token_past_its_rate_limit_gets_a_json_429_with_retry_after(api, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    answers = [api.get("/api/v1/batches/999999").status_code for _ in range(4)]
    assert answers[:3] == [404, 404, 404]
    assert answers[3] == 429
    limited = api.get("/api/v1/batches/999999")
    assert "Too many requests" in limited.json()["error"]
    assert 1 <= int(limited["Retry-After"]) <= 60
