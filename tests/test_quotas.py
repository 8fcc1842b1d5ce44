"""Storage quotas: a submitter cannot fill the disk; an oversized request is refused unread (issue 12)."""

import io

from django.test import Client
from django.utils import timezone

from screening.intake.submission import submit
from screening.models import Batch, Study
from tests.conftest import XRAYS


def test_files_past_the_users_quota_are_refused_one_by_one(submitter, other_submitter, settings, publish):
    sizes = [p.stat().st_size for p in XRAYS[:3]]
    settings.SCREENING_USER_QUOTA_BYTES = sizes[0] + sizes[1]
    outcome = submit(submitter, Batch.Source.API, [(p.name, io.BytesIO(p.read_bytes())) for p in XRAYS[:3]])
    assert [s.original_name for s in outcome.studies] == [XRAYS[0].name, XRAYS[1].name]
    assert [r.name for r in outcome.refusals] == [XRAYS[2].name]
    assert "quota" in outcome.refusals[0].error
    # Another submitter has a quota of their own; purged originals no longer count.
    assert submit(other_submitter, Batch.Source.API, [("x.jpeg", io.BytesIO(XRAYS[2].read_bytes()))]).studies
    Study.objects.filter(batch__submitted_by=submitter).update(file_purged_at=timezone.now())
    assert submit(submitter, Batch.Source.API, [("y.jpeg", io.BytesIO(XRAYS[2].read_bytes()))]).studies


def test_a_file_refused_for_the_quota_is_not_kept_on_disk(submitter, settings, publish):
    """Nothing of a file the quota refuses is stored; an in-batch copy of an accepted file costs no quota."""
    settings.SCREENING_USER_QUOTA_BYTES = XRAYS[0].stat().st_size
    files = [(p.name, io.BytesIO(p.read_bytes())) for p in XRAYS[:2]] + [
        ("again.jpeg", io.BytesIO(XRAYS[0].read_bytes()))
    ]
    outcome = submit(submitter, Batch.Source.API, files)
    assert [s.original_name for s in outcome.studies] == [XRAYS[0].name]
    assert [r.name for r in outcome.refusals] == [XRAYS[1].name]
    assert outcome.notes == [{"file": "again.jpeg", "note": f"Same content as {XRAYS[0].name}; stored once."}]
    kept = sorted(str(p.relative_to(settings.MEDIA_ROOT)) for p in settings.MEDIA_ROOT.rglob("*") if p.is_file())
    assert kept == [outcome.studies[0].file.name]


def test_no_quota_when_set_to_zero(submitter, settings, publish):
    settings.SCREENING_USER_QUOTA_BYTES = 0
    assert len(
        submit(submitter, Batch.Source.API, [(p.name, io.BytesIO(p.read_bytes())) for p in XRAYS]).studies
    ) == len(XRAYS)


def test_an_oversized_request_is_refused_before_it_is_read(submitter, settings):
    from screening.api import tokens

    settings.SCREENING_MAX_REQUEST_BYTES = 1000
    client = Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(submitter)}")
    response = client.post("/api/v1/studies", {"file": io.BytesIO(XRAYS[0].read_bytes())})
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert not Study.objects.exists()
