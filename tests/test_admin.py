"""The Django admin: read-only evidence, exports, re-runs and the audit of admin changes."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from screening.models import AuditEvent, Result, Review, Study
from tests.factories import batch_for, bulk_scored_studies, scored_study


@pytest.fixture
def admin_user(db):
    return User.objects.create_superuser("root", "root@example.org", "pw")


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def served_model(settings, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"version": "v-new"}))
    settings.SCREENING_MODEL_DIR = str(folder)


def test_results_and_audit_events_are_read_only(admin_client, submitter):
    study = scored_study(batch_for(submitter), 0.7)
    result = study.results.get()
    page = admin_client.get(f"/admin/screening/result/{result.pk}/change/")
    assert page.status_code == 200
    assert b'name="probability"' not in page.content
    assert admin_client.post(f"/admin/screening/result/{result.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Result.objects.filter(pk=result.pk).exists()


def test_rerun_queues_studies_scored_by_another_model_and_refuses_the_same(
    admin_client, submitter, served_model, django_capture_on_commit_callbacks, publish
):
    batch = batch_for(submitter)
    old = scored_study(batch, 0.3)
    current = scored_study(batch, 0.6)
    Result.objects.filter(study=current).update(model_version="v-new")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/screening/study/",
            {"action": "rerun_inference", "_selected_action": [old.pk, current.pk]},
            follow=True,
        )
    text = response.content.decode()
    assert "1 study queued for the current model v-new" in text
    assert "Refused for 1 studies: model v-new already scored them" in text
    assert [call.args[0] for call in publish.call_args_list] == [[old.pk]]
    old.refresh_from_db()
    assert old.status == Study.Status.QUEUED
    assert old.results.count() == 1
    assert AuditEvent.objects.filter(action="rerun", object_id=str(old.pk)).exists()


def test_admin_export_is_audited(admin_client, submitter):
    study = scored_study(batch_for(submitter), 0.9)
    response = admin_client.post(
        "/admin/screening/study/", {"action": "export_studies_csv", "_selected_action": [study.pk]}
    )
    assert response.status_code == 200
    assert str(study.pk) in b"".join(response.streaming_content).decode()
    assert AuditEvent.objects.filter(action="export", actor__username="root").exists()


def test_admin_changes_land_in_the_audit_trail(admin_client, submitter):
    batch = batch_for(submitter, name="ward 3")
    response = admin_client.post(
        f"/admin/screening/batch/{batch.pk}/change/",
        {"name": "ward 4", "studies-TOTAL_FORMS": "0", "studies-INITIAL_FORMS": "0"},
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="admin_change")
    assert event.actor_username == "root"
    assert event.details["model"] == "batch"
    assert event.details["kind"] == "change"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/screening/study/",
        "/admin/screening/result/",
        "/admin/screening/review/",
        "/admin/screening/auditevent/",
        "/admin/screening/batch/",
        "/admin/screening/apitoken/",
    ],
)
def test_admin_changelists_query_count_is_bounded_with_1000_studies(
    admin_client, submitter, radiologist, url, django_assert_max_num_queries
):
    batch = batch_for(submitter)
    studies = bulk_scored_studies(batch, 1000)
    Review.objects.bulk_create(Review(study=s, reviewer=radiologist, finding="normal") for s in studies[:200])
    AuditEvent.objects.bulk_create(
        AuditEvent(action="study_viewed", actor=radiologist, object_type="study", object_id=str(s.pk))
        for s in studies[:200]
    )
    with django_assert_max_num_queries(12):
        assert admin_client.get(url).status_code == 200
