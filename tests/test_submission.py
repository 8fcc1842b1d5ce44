"""Upload-layer checks: what is refused never becomes a study; the rest of the batch goes on."""

import hashlib
import io
import zipfile

import pytest

from screening.intake.acceptance import Limits
from screening.intake.submission import NothingAccepted, storage_path, submit
from screening.models import Batch, Study
from tests.conftest import ORIGINALS, XRAYS, token_client

LIMITS = Limits(
    max_file_bytes=2 * 1024 * 1024, max_files=10, max_zip_uncompressed_bytes=8 * 1024 * 1024, max_zip_ratio=50
)


def files(*pairs):
    return [(name, io.BytesIO(data)) for name, data in pairs]


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


@pytest.fixture
def xray():
    return XRAYS[0].read_bytes()


def test_it_accepts_a_single_file_and_stores_it_content_addressed(submitter, xray, settings):
    outcome = submit(submitter, Batch.Source.API, files(("chest.jpeg", xray)), limits=LIMITS)
    study = outcome.studies[0]
    assert study.format == "jpeg"
    assert study.size_bytes == len(xray)
    assert study.original_name == "chest.jpeg"
    assert study.sha256 == hashlib.sha256(xray).hexdigest()
    assert study.file.name == storage_path(study.sha256, "jpeg")
    assert (settings.MEDIA_ROOT / study.file.name).read_bytes() == xray


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"this is a text file renamed to .jpg\n" * 20, "Not a JPEG, PNG or DICOM"),
        ("big.jpeg", b"\xff\xd8\xff\xe0" + b"\0" * (3 * 1024 * 1024), "larger than"),
    ],
)
def test_it_refuses_bad_files_without_a_study_row_and_keeps_the_rest(submitter, xray, name, data, error):
    outcome = submit(submitter, Batch.Source.API, files((name, data), ("good.jpeg", xray)), limits=LIMITS)
    assert [s.original_name for s in outcome.studies] == ["good.jpeg"]
    assert len(outcome.refusals) == 1
    assert outcome.refusals[0].name == name
    assert error in outcome.refusals[0].error
    assert Study.objects.count() == 1
    assert outcome.batch.upload_report == [{"file": name, "error": outcome.refusals[0].error}]


def test_it_stores_nothing_when_every_file_is_refused(submitter):
    with pytest.raises(NothingAccepted) as caught:
        submit(submitter, Batch.Source.API, files(("a.jpg", b""), ("b.png", b"hello")), limits=LIMITS)
    assert len(caught.value.refusals) == 2
    assert Batch.objects.count() == 0
    assert Study.objects.count() == 0


def test_it_expands_a_zip_and_refuses_unsafe_member_paths(submitter, xray, settings):
    archive = zip_bytes(
        {"ok/one.jpeg": xray, "../escape.jpeg": XRAYS[1].read_bytes(), "/etc/absolute.jpeg": XRAYS[2].read_bytes()}
    )
    outcome = submit(submitter, Batch.Source.API, files(("upload.zip", archive)), limits=LIMITS)
    assert [s.original_name for s in outcome.studies] == ["upload.zip/ok/one.jpeg"]
    assert sorted(r.name for r in outcome.refusals) == ["upload.zip/../escape.jpeg", "upload.zip//etc/absolute.jpeg"]
    assert all("Unsafe path" in r.error for r in outcome.refusals)
    written = [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].is_relative_to(settings.MEDIA_ROOT)


def test_it_refuses_a_zip_bomb_by_ratio(submitter, xray):
    bomb = zip_bytes({"bomb.dcm": b"\0" * (1024 * 1024), "real.jpeg": xray}, compression=zipfile.ZIP_DEFLATED)
    outcome = submit(submitter, Batch.Source.API, files(("bomb.zip", bomb)), limits=LIMITS)
    assert [s.original_name for s in outcome.studies] == ["bomb.zip/real.jpeg"]
    assert "zip bomb" in outcome.refusals[0].error


def test_it_refuses_a_zip_that_expands_past_the_total_limit(submitter, xray):
    limits = Limits(
        max_file_bytes=LIMITS.max_file_bytes, max_files=10, max_zip_uncompressed_bytes=len(xray) + 10, max_zip_ratio=50
    )
    archive = zip_bytes({"a.jpeg": xray, "b.jpeg": XRAYS[1].read_bytes()})
    with pytest.raises(NothingAccepted) as caught:
        submit(submitter, Batch.Source.API, files(("big.zip", archive)), limits=limits)
    assert "expand" in caught.value.refusals[0].error


def test_it_refuses_files_past_the_batch_limit(submitter):
    limits = Limits(
        max_file_bytes=LIMITS.max_file_bytes,
        max_files=3,
        max_zip_uncompressed_bytes=LIMITS.max_zip_uncompressed_bytes,
        max_zip_ratio=50,
    )
    outcome = submit(submitter, Batch.Source.API, files(*[(p.name, p.read_bytes()) for p in XRAYS[:5]]), limits=limits)
    assert len(outcome.studies) == 3
    assert len(outcome.refusals) == 2
    assert all("Batch limit of 3" in r.error for r in outcome.refusals)


def test_it_refuses_nested_and_damaged_archives(submitter, xray):
    inner = zip_bytes({"x.jpeg": xray})
    outer = zip_bytes({"inner.zip": inner, "y.jpeg": XRAYS[1].read_bytes()})
    outcome = submit(
        submitter, Batch.Source.API, files(("outer.zip", outer), ("broken.zip", b"PK\x03\x04garbage")), limits=LIMITS
    )
    assert [s.original_name for s in outcome.studies] == ["outer.zip/y.jpeg"]
    errors = {r.name: r.error for r in outcome.refusals}
    assert "Archives inside archives" in errors["outer.zip/inner.zip"]
    assert "damaged" in errors["broken.zip"]


def test_it_stores_the_same_file_once_per_batch_with_a_note(submitter, xray):
    outcome = submit(submitter, Batch.Source.API, files(("a.jpeg", xray), ("copy-of-a.jpeg", xray)), limits=LIMITS)
    assert len(outcome.studies) == 1
    assert outcome.notes == [{"file": "copy-of-a.jpeg", "note": "Same content as a.jpeg; stored once."}]
    assert {"file": "copy-of-a.jpeg", "note": "Same content as a.jpeg; stored once."} in outcome.batch.upload_report


def test_a_file_scored_in_an_earlier_batch_links_to_that_result(submitter, other_submitter, xray):
    first = submit(submitter, Batch.Source.API, files(("a.jpeg", xray)), limits=LIMITS).studies[0]
    Study.objects.filter(pk=first.pk).update(status=Study.Status.DONE)
    mine = submit(submitter, Batch.Source.API, files(("mine-again.jpeg", xray)), limits=LIMITS).studies[0]
    assert mine.status == Study.Status.DONE
    assert mine.duplicate_of_id == first.pk
    assert f"study {first.pk}" in mine.status_message
    second = submit(other_submitter, Batch.Source.API, files(("again.jpeg", xray)), limits=LIMITS).studies[0]
    assert second.status == Study.Status.DONE
    assert second.duplicate_of_id == first.pk


def test_another_users_study_is_never_named_to_a_submitter(submitter, other_submitter, xray):
    """Issue 12: B uploading A's file was told "Identical to study 1530 (batch 45)", A's ids."""
    first = submit(submitter, Batch.Source.API, files(("a.jpeg", xray)), limits=LIMITS).studies[0]
    Study.objects.filter(pk=first.pk).update(status=Study.Status.DONE)
    second = submit(other_submitter, Batch.Source.API, files(("again.jpeg", xray)), limits=LIMITS).studies[0]
    assert str(first.pk) not in second.status_message
    assert str(first.batch_id) not in second.status_message
    assert "already scored" in second.status_message
    body = token_client(other_submitter).get(f"/api/v1/studies/{second.pk}").json()
    assert body["duplicate_of"] is None
    assert body["note"] == second.status_message


def test_a_file_still_waiting_elsewhere_is_scored_again(submitter, xray):
    submit(submitter, Batch.Source.API, files(("a.jpeg", xray)), limits=LIMITS)
    second = submit(submitter, Batch.Source.API, files(("a.jpeg", xray)), limits=LIMITS).studies[0]
    assert second.status == Study.Status.RECEIVED
    assert second.duplicate_of is None


def test_it_accepts_png_and_full_resolution_jpeg(submitter):
    from PIL import Image

    png = io.BytesIO()
    Image.open(XRAYS[0]).save(png, format="PNG")
    outcome = submit(
        submitter,
        Batch.Source.API,
        files(("x.png", png.getvalue()), ("orig.jpeg", ORIGINALS[0].read_bytes())),
        limits=LIMITS,
    )
    assert sorted(s.format for s in outcome.studies) == ["jpeg", "png"]
