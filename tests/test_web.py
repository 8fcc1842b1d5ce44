"""Web pages for submitters: login, upload form, batch pages."""

import pytest
from django.test import Client

from screening.models import AuditEvent, Batch, Study
from tests.conftest import XRAYS, logged_in, named


@pytest.fixture(autouse=True)
def no_broker(publish):
    return publish


@pytest.mark.parametrize("url", ["/batches/", "/batches/new/", "/batches/1/"])
def test_anonymous_visitors_are_sent_to_login(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_page_renders_with_intended_use(db):
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    assert b"not a diagnosis" in response.content


def test_login_and_logout_are_audited(submitter):
    client = Client()
    assert client.post("/accounts/login/", {"username": "sam", "password": "pw-sam"}).status_code == 302
    client.post("/accounts/logout/")
    client.post("/accounts/login/", {"username": "sam", "password": "wrong"})
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", "actor_username"))
    assert actions == [("login", "sam"), ("logout", "sam"), ("login_failed", "")]
    assert AuditEvent.objects.last().details == {"username": "sam"}


def test_submitter_uploads_files_and_sees_the_batch(submitter):
    client = logged_in(submitter)
    response = client.post("/batches/new/", {"files": [named("a.jpeg", XRAYS[0].read_bytes()), named("bad.jpeg", b"")]})
    batch = Batch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/batches/{batch.pk}/"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b"a.jpeg" in page.content
    assert b"bad.jpeg" in page.content
    assert b"File is empty." in page.content
    assert AuditEvent.objects.filter(action="submit", actor=submitter, object_id=str(batch.pk)).exists()


def test_an_upload_with_nothing_acceptable_shows_the_errors(submitter):
    response = logged_in(submitter).post("/batches/new/", {"files": [named("n.jpg", b"nope")]}, follow=True)
    assert b"Not a JPEG, PNG or DICOM" in response.content
    assert Study.objects.count() == 0


def test_users_without_submit_permission_get_403_on_the_upload_page(radiologist, outsider):
    assert logged_in(radiologist).get("/batches/new/").status_code == 403
    assert logged_in(outsider).get("/batches/new/").status_code == 403


def test_batch_pages_hide_other_peoples_batches(submitter, other_submitter, radiologist):
    logged_in(other_submitter).post("/batches/new/", {"files": [named("t.jpeg", XRAYS[0].read_bytes())]})
    batch = Batch.objects.get()
    assert logged_in(submitter).get(f"/batches/{batch.pk}/").status_code == 404
    assert b"#%d" % batch.pk not in logged_in(submitter).get("/batches/").content
    assert logged_in(radiologist).get(f"/batches/{batch.pk}/").status_code == 200


def test_batch_list_query_count_is_pinned(submitter, django_assert_num_queries):
    client = logged_in(submitter)
    for p in XRAYS[:4]:
        client.post("/batches/new/", {"files": [named(p.name, p.read_bytes())]})
    # session, user, 2x permissions, batches with counts, site setting (banner), session save (savepoint,
    # update, release)
    with django_assert_num_queries(9):
        assert client.get("/batches/").status_code == 200


def test_healthz_answers_without_login(db):
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_upload_page_answers_json_for_its_script(submitter):
    client = logged_in(submitter)
    response = client.post(
        "/batches/new/",
        {"files": [named("a.jpeg", XRAYS[0].read_bytes()), named("e.png", b"")]},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["url"] == f"/batches/{body['batch']}/"
    assert body["accepted"] == 1
    assert body["refused"] == [{"file": "e.png", "error": "File is empty."}]
    assert client.get(body["progress_url"]).json()["progress"]["total"] == 1


def test_the_upload_page_json_error_when_nothing_is_acceptable(submitter):
    response = logged_in(submitter).post(
        "/batches/new/", {"files": [named("n.jpg", b"nope")]}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400
    assert response.json()["refused"][0]["file"] == "n.jpg"


def test_intended_use_names_the_population_from_the_model_card(submitter, settings, tmp_path):
    import json

    (tmp_path / "card.json").write_text(json.dumps({"version": "v-card", "population": "test population of 7 wards"}))
    settings.SCREENING_MODEL_DIR = str(tmp_path)
    page = logged_in(submitter).get("/batches/")
    assert b"Model validated on test population of 7 wards." in page.content
    assert b"v-card" in page.content
    from screening.web.exports import intended_use_line

    assert "test population of 7 wards" in intended_use_line()


def test_every_page_carries_a_content_security_policy(submitter):
    page = logged_in(submitter).get("/batches/")
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert Client().get("/healthz")["Content-Security-Policy"] == policy
