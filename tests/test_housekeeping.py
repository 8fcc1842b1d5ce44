"""Housekeeping from beat: stored files no study refers to are removed after a grace period, and
originals past the retention period are purged on schedule; both audited and counted (issue 26)."""

import io
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from harness.worker_process import start_up
from screening import counters
from screening.intake import housekeeping
from screening.intake.submission import submit
from screening.models import AuditEvent, Batch, Study
from tests.conftest import XRAYS

GRACE = 3600


def backdate(path: Path, seconds: float = 2 * GRACE) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def stray(settings, relative: str, data: bytes = b"left by a crash") -> Path:
    path = Path(settings.MEDIA_ROOT) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return backdate(path)


def submitted(user, source_file: Path = XRAYS[0]) -> Study:
    return submit(user, Batch.Source.API, [(source_file.name, io.BytesIO(source_file.read_bytes()))]).studies[0]


def test_an_old_original_no_study_refers_to_is_removed_audited_and_counted(submitter, settings, publish, admin_client):
    study = submitted(submitter)
    backdate(Path(study.file.path))
    orphan = stray(settings, "studies/ab/" + "ab" * 32 + ".jpeg", b"x" * 100)

    outcome = housekeeping.remove_orphans(GRACE)

    assert (outcome.files, outcome.partials, outcome.bytes) == (1, 0, 100)
    assert not orphan.exists()
    assert not orphan.with_name(f".{orphan.name}.orphan").exists()
    assert Path(study.file.path).exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.ORPHANS_REMOVED)
    assert event.details["files"] == 1
    assert event.details["bytes"] == 100
    assert counters.values()[counters.ORPHAN_FILES_REMOVED] == 1
    metrics = admin_client.get("/metrics").content.decode()
    assert "screening_orphan_files_removed_total 1.0" in metrics


def test_recent_files_are_kept_even_when_no_study_refers_to_them_yet(submitter, settings, publish):
    in_flight = stray(settings, "studies/cd/" + "cd" * 32 + ".png")
    os.utime(in_flight)  # just written: an upload whose rows have not committed yet

    assert housekeeping.remove_orphans(GRACE).removed == 0
    assert in_flight.exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.ORPHANS_REMOVED).exists()


def test_unfinished_writes_left_by_a_killed_process_are_removed(settings, db):
    partial = stray(settings, "studies/ef/.ef0123.jpeg.4b1d.part")
    preview_partial = stray(settings, "previews/ef/.ef0123.png.12.34.part")

    outcome = housekeeping.remove_orphans(GRACE)

    assert outcome.partials == 2
    assert not partial.exists()
    assert not preview_partial.exists()


def test_an_orphan_that_an_upload_reuses_is_kept(submitter, settings, publish):
    # A crash left this file with no row; a later upload of the same bytes reuses it rather than write
    # it again, and touches it, so housekeeping must not take it away before the upload's row commits.
    first = submitted(submitter)
    path = Path(first.file.path)
    Study.objects.filter(pk=first.pk).delete()
    backdate(path)

    again = submitted(submitter)
    assert again.file.name == first.file.name

    assert housekeeping.remove_orphans(GRACE).removed == 0
    assert path.exists()


def test_the_original_of_a_purged_study_that_a_crash_left_behind_is_removed(submitter, settings, publish):
    study = submitted(submitter)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE, file_purged_at=timezone.now())
    backdate(Path(study.file.path))

    assert housekeeping.remove_orphans(GRACE).files == 1
    assert not Path(study.file.path).exists()


def test_a_preview_is_kept_while_its_study_keeps_its_original(submitter, settings, publish):
    study = submitted(submitter)
    kept = stray(settings, f"previews/{study.sha256[:2]}/{study.sha256}.png")
    gone = stray(settings, "previews/00/" + "0" * 64 + ".png")

    assert housekeeping.remove_orphans(GRACE).files == 1
    assert kept.exists()
    assert not gone.exists()


def test_a_dry_run_counts_and_removes_nothing(settings, db):
    orphan = stray(settings, "studies/ab/" + "ab" * 32 + ".jpeg")
    assert housekeeping.remove_orphans(GRACE, dry_run=True).files == 1
    assert orphan.exists()
    assert counters.values()[counters.ORPHAN_FILES_REMOVED] == 0


def test_the_scheduled_round_purges_originals_past_the_retention_period(submitter, settings, publish):
    settings.SCREENING_RETENTION_DAYS = 30
    settings.SCREENING_ORPHAN_GRACE_SECONDS = GRACE
    old, recent = submitted(submitter, XRAYS[0]), submitted(submitter, XRAYS[1])
    Study.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40), status=Study.Status.DONE)
    Study.objects.filter(pk=recent.pk).update(status=Study.Status.DONE)

    summary = housekeeping.run()

    assert summary["purged_studies"] == 1
    assert summary["purged_files"] == 1
    assert not Path(old.file.path).exists()
    assert Path(recent.file.path).exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.PURGE)
    assert event.details["scheduled"] is True
    assert event.actor is None
    assert counters.values()[counters.RETENTION_FILES_REMOVED] == 1

    housekeeping.run()  # nothing due: no second, empty audit row
    assert AuditEvent.objects.filter(action=AuditEvent.Action.PURGE).count() == 1


def test_without_a_retention_period_the_schedule_purges_nothing(submitter, settings, publish):
    settings.SCREENING_RETENTION_DAYS = 0
    study = submitted(submitter)
    Study.objects.filter(pk=study.pk).update(created_at=timezone.now() - timedelta(days=400), status=Study.Status.DONE)

    assert "purged_studies" not in housekeeping.run()
    assert Path(study.file.path).exists()


def test_beat_runs_housekeeping_on_its_interval(settings):
    from worker.app import app

    entry = app.conf.beat_schedule["housekeeping"]
    assert entry["task"] == "screening.tasks.housekeeping_task"
    assert entry["schedule"] == float(settings.SCREENING_HOUSEKEEPING_SECONDS)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "raw"), [("SCREENING_RETENTION_DAYS", "-1"), ("SCREENING_ORPHAN_GRACE_SECONDS", "60")]
)
def test_housekeeping_settings_are_parsed_strictly(name, raw):
    done = start_up(**{name: raw})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr
