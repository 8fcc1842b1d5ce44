"""Retention: originals (patient data) go after a period; results, reviews and the audit trail stay (issue 12)."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from screening.intake.retention import purge_originals
from screening.intake.submission import submit
from screening.models import AuditEvent, Batch, Review, Study
from tests.conftest import XRAYS, logged_in


def old(studies, days):
    Study.objects.filter(pk__in=[s.pk for s in studies]).update(
        created_at=timezone.now() - timedelta(days=days), status=Study.Status.DONE
    )


def test_purge_removes_old_originals_and_keeps_results_and_reviews(submitter, radiologist, settings, publish):
    kept, shared, gone = (
        submit(submitter, Batch.Source.API, [(p.name, io.BytesIO(p.read_bytes()))]).studies[0] for p in XRAYS[:3]
    )
    newer_copy = submit(submitter, Batch.Source.API, [("copy.jpeg", io.BytesIO(XRAYS[1].read_bytes()))]).studies[0]
    old([shared, gone], days=100)
    old([kept], days=10)
    Review.objects.create(study=gone, reviewer=radiologist, finding=Review.Finding.NORMAL)

    outcome = purge_originals(90)

    assert outcome.studies == 2
    assert outcome.files == 1
    assert not (settings.MEDIA_ROOT / gone.file.name).exists()
    for study in (kept, shared, newer_copy):
        assert (settings.MEDIA_ROOT / study.file.name).exists()
    gone.refresh_from_db()
    assert gone.file_purged_at is not None
    assert gone.reviews.count() == 1
    assert AuditEvent.objects.get(action=AuditEvent.Action.PURGE).details["files"] == 1
    page = logged_in(radiologist).get(f"/studies/{gone.pk}/").content.decode()
    assert "removed on" in page
    assert 'id="xray"' not in page
    assert logged_in(radiologist).get(f"/studies/{gone.pk}/image.png").status_code == 404
    assert purge_originals(90).studies == 0  # nothing left to do


def test_unfinished_studies_are_never_purged(submitter, settings, publish):
    study = submit(submitter, Batch.Source.API, [("a.jpeg", io.BytesIO(XRAYS[0].read_bytes()))]).studies[0]
    Study.objects.filter(pk=study.pk).update(created_at=timezone.now() - timedelta(days=400))
    assert purge_originals(30).studies == 0
    assert (settings.MEDIA_ROOT / study.file.name).exists()


def test_the_command_dry_runs_and_refuses_a_zero_period(submitter, publish, settings):
    study = submit(submitter, Batch.Source.API, [("a.jpeg", io.BytesIO(XRAYS[0].read_bytes()))]).studies[0]
    old([study], days=100)
    out = io.StringIO()
    call_command("purge", "--older-than", "90", "--dry-run", stdout=out)
    assert "Would remove 1 original files" in out.getvalue()
    assert (settings.MEDIA_ROOT / study.file.name).exists()
    with pytest.raises(CommandError, match="at least one day"):
        call_command("purge", "--older-than", "0")
