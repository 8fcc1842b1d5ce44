"""The radiologists' worklist and the review workflow."""

import csv
import io

import pytest
from django.test import Client

from screening.models import AuditEvent, Review, Study
from tests.conftest import logged_in
from tests.factories import batch_for, scored_study, unscored_study


@pytest.fixture
def studies(submitter, settings):
    batch = batch_for(submitter)
    low = scored_study(batch, 0.10, media_root=settings.MEDIA_ROOT)
    high = scored_study(batch, 0.95, media_root=settings.MEDIA_ROOT)
    mid = scored_study(batch, 0.60, media_root=settings.MEDIA_ROOT)
    failed = unscored_study(batch, Study.Status.FAILED, "Truncated file.")
    return {"low": low, "high": high, "mid": mid, "failed": failed}


def worklist_ids(client, **params):
    response = client.get("/worklist/", params)
    assert response.status_code == 200
    return [study.pk for study in response.context["page"]]


def test_worklist_puts_the_highest_score_first_and_unscored_in_their_own_tab(radiologist, studies):
    client = logged_in(radiologist)
    assert worklist_ids(client) == [studies["high"].pk, studies["mid"].pk, studies["low"].pk]
    assert worklist_ids(client, tab="unscored") == [studies["failed"].pk]
    counts = client.get("/worklist/").context["counts"]
    assert counts["to-review"] == 3
    assert counts["unscored"] == 1
    assert counts["reviewed"] == 0


def test_worklist_filters_by_label_and_batch(radiologist, submitter, studies):
    client = logged_in(radiologist)
    assert worklist_ids(client, label="PNEUMONIA") == [studies["high"].pk, studies["mid"].pk]
    other = batch_for(submitter)
    extra = scored_study(other, 0.7)
    assert worklist_ids(client, batch=other.pk) == [extra.pk]
    assert worklist_ids(client, date_from="2000-01-01", date_to="2000-01-02") == []


def test_reviewing_saves_and_moves_to_the_next_study(radiologist, studies):
    client = logged_in(radiologist)
    response = client.post(
        f"/studies/{studies['high'].pk}/",
        {"agrees_with_model": "yes", "finding": "pneumonia", "comment": "RLL consolidation", "needs_second_read": ""},
    )
    assert response.status_code == 302
    assert response["Location"] == f"/studies/{studies['mid'].pk}/"
    review = Review.objects.get()
    assert review.reviewer == radiologist
    assert review.agrees_with_model is True
    assert review.finding == "pneumonia"
    assert review.result == studies["high"].results.get()
    studies["high"].refresh_from_db()
    assert studies["high"].review_status == Study.ReviewStatus.REVIEWED
    assert worklist_ids(client) == [studies["mid"].pk, studies["low"].pk]
    assert worklist_ids(client, tab="reviewed") == [studies["high"].pk]
    assert AuditEvent.objects.filter(
        action="review_saved", object_id=str(studies["high"].pk), actor=radiologist
    ).exists()


def test_reviews_are_append_only_and_the_latest_sets_the_status(radiologist, studies):
    client = logged_in(radiologist)
    url = f"/studies/{studies['low'].pk}/"
    client.post(url, {"agrees_with_model": "no", "finding": "other", "needs_second_read": "on"})
    studies["low"].refresh_from_db()
    assert studies["low"].review_status == Study.ReviewStatus.SECOND_READ
    assert worklist_ids(client, tab="second-read") == [studies["low"].pk]
    client.post(url, {"agrees_with_model": "yes", "finding": "normal"})
    studies["low"].refresh_from_db()
    assert studies["low"].review_status == Study.ReviewStatus.REVIEWED
    assert list(Review.objects.filter(study=studies["low"]).order_by("pk").values_list("finding", flat=True)) == [
        "other",
        "normal",
    ]


def test_an_invalid_review_is_not_saved(radiologist, studies):
    response = logged_in(radiologist).post(f"/studies/{studies['mid'].pk}/", {"finding": "made-up"})
    assert response.status_code == 200
    assert Review.objects.count() == 0


def test_viewing_a_study_is_audited_and_shows_the_result(radiologist, studies):
    response = logged_in(radiologist).get(f"/studies/{studies['high'].pk}/")
    assert response.status_code == 200
    assert b"0.950" in response.content
    assert b"v-test" in response.content
    assert b"not a diagnosis" in response.content
    assert AuditEvent.objects.filter(action="study_viewed", object_id=str(studies["high"].pk)).count() == 1


def test_the_image_is_served_only_through_the_permission_check(radiologist, other_submitter, studies, settings):
    response = logged_in(radiologist).get(f"/studies/{studies['high'].pk}/image.png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert logged_in(other_submitter).get(f"/studies/{studies['high'].pk}/image.png").status_code == 404
    assert Client().get(f"/studies/{studies['high'].pk}/image.png").status_code == 302
    # No public media URL: the stored file is not reachable by its path.
    assert logged_in(radiologist).get(f"/media/{studies['high'].file.name}").status_code == 404


def test_a_study_without_a_readable_image_is_a_clean_404(radiologist, studies):
    assert logged_in(radiologist).get(f"/studies/{studies['failed'].pk}/image.png").status_code == 404


def test_worklist_export_is_csv_with_intended_use(radiologist, studies):
    logged_in(radiologist).post(f"/studies/{studies['high'].pk}/", {"agrees_with_model": "yes", "finding": "pneumonia"})
    response = logged_in(radiologist).get("/worklist/export.csv", {"tab": "reviewed"})
    text = b"".join(response.streaming_content).decode()
    first, rest = text.split("\n", 1)
    assert first.startswith("# Decision support for triage, not a diagnosis")
    rows = list(csv.DictReader(io.StringIO(rest)))
    assert len(rows) == 1
    assert rows[0]["study"] == str(studies["high"].pk)
    assert rows[0]["probability"] == "0.950000"
    assert rows[0]["review_finding"] == "pneumonia"
    assert rows[0]["reviewer"] == "rita"
    assert AuditEvent.objects.filter(action="export", actor=radiologist).exists()


def test_batch_export_lists_every_study(submitter, studies):
    response = logged_in(submitter).get(f"/batches/{studies['high'].batch_id}/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode().split("\n", 1)[1])))
    assert sorted(int(r["study"]) for r in rows) == sorted(s.pk for s in studies.values())


def test_the_heatmap_is_on_by_default_only_above_the_threshold(radiologist, studies):
    client = logged_in(radiologist)
    above = client.get(f"/studies/{studies['high'].pk}/").content.decode()
    below = client.get(f"/studies/{studies['low'].pk}/").content.decode()
    assert 'id="heatmap-toggle" checked' in above
    assert 'id="heatmap"' in above
    assert 'id="heatmap-toggle">' in below
    assert 'id="heatmap"' in below
    assert "off until you turn it on" in below
    assert "off until you turn it on" not in above


def test_exports_never_hand_a_spreadsheet_a_formula(radiologist, submitter, admin_client):
    """Issue 12: a file named =HYPERLINK(...) or an AccessionNumber starting with = was exported as is."""
    batch = batch_for(submitter)
    evil = scored_study(batch, 0.9, accession_number="=1+2")
    Study.objects.filter(pk=evil.pk).update(original_name='=HYPERLINK("http://evil.example","x")')
    for response in (
        logged_in(radiologist).get("/worklist/export.csv"),
        logged_in(submitter).get(f"/batches/{batch.pk}/export.csv"),
        admin_client.post("/admin/screening/study/", {"action": "export_studies_csv", "_selected_action": [evil.pk]}),
    ):
        text = b"".join(response.streaming_content).decode()
        row = next(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
        assert row["file"] == '\'=HYPERLINK("http://evil.example","x")'
        assert row["accession_number"] == "'=1+2"
