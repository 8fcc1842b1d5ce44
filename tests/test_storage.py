"""A full or failing disk never leaves a damaged file behind, and never poisons later uploads (issue 12)."""

import errno
import hashlib
import io
import os
import shutil
import time
from pathlib import Path

import pytest

from ml.serving.decode import decode
from screening.intake import storage
from screening.intake.submission import storage_path, submit
from screening.models import Batch, Study
from tests.conftest import XRAYS, logged_in, named


@pytest.fixture
def disk_full_after_first_file(monkeypatch):
    """Like a disk that fills up: the first file is written, the second stops half-way with ENOSPC."""
    real_copy = shutil.copyfileobj
    calls = []

    def copy(source, target, length=0):
        calls.append(1)
        if len(calls) == 1:
            return real_copy(source, target, length)
        target.write(source.read(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.shutil, "copyfileobj", copy)
    return calls


def stored_files(media_root):
    return sorted(p.relative_to(media_root) for p in media_root.rglob("*") if p.is_file())


def test_a_write_that_fails_half_way_answers_507_and_leaves_nothing(api, settings, disk_full_after_first_file):
    response = api.post(
        "/api/v1/batches", {"files": [named("a.jpeg", XRAYS[0].read_bytes()), named("b.jpeg", XRAYS[1].read_bytes())]}
    )
    assert response.status_code == 507
    assert "could not store" in response.json()["error"]
    assert not Study.objects.exists()
    assert not Batch.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []  # neither the partial file nor the first, complete one


def test_the_answer_is_in_the_callers_language(api, disk_full_after_first_file):
    files = [named("a.jpeg", XRAYS[0].read_bytes()), named("b.jpeg", XRAYS[1].read_bytes())]
    response = api.post("/api/v1/batches", {"files": files}, HTTP_ACCEPT_LANGUAGE="es")
    assert response.status_code == 507
    assert "No se conservó nada" in response.json()["error"]


def test_the_upload_page_says_so_too(submitter, settings, disk_full_after_first_file):
    response = logged_in(submitter).post(
        "/batches/new/",
        {"files": [named("a.jpeg", XRAYS[0].read_bytes()), named("b.jpeg", XRAYS[1].read_bytes())]},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 507
    assert "Nothing was kept" in response.json()["error"]


def test_a_truncated_file_already_in_place_is_replaced_not_trusted(submitter, settings, publish):
    data = XRAYS[0].read_bytes()
    name = storage_path(hashlib.sha256(data).hexdigest(), "jpeg")
    damaged = settings.MEDIA_ROOT / name
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(data[: len(data) // 2])  # what a disk-full error used to leave behind

    study = submit(submitter, Batch.Source.API, [("again.jpeg", io.BytesIO(data))]).studies[0]
    assert (settings.MEDIA_ROOT / study.file.name).read_bytes() == data
    assert decode(settings.MEDIA_ROOT / study.file.name).width > 0


def test_an_intact_copy_is_reused_without_writing(settings, tmp_path):
    data = XRAYS[1].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert storage.store_verified("studies/x/one.jpg", io.BytesIO(data), sha, len(data)) is True
    assert storage.store_verified("studies/x/one.jpg", io.BytesIO(data), sha, len(data)) is False
    assert [str(p) for p in stored_files(settings.MEDIA_ROOT)] == ["studies/x/one.jpg"]


def test_files_stored_on_threads_are_all_in_place_when_the_submission_answers(submitter, settings, publish):
    """Files are written on the submission's storing threads; the batch is accepted only once all are stored."""
    files = [(f"{i}.jpeg", io.BytesIO(XRAYS[i % len(XRAYS)].read_bytes() + b"#%d" % i)) for i in range(30)]
    outcome = submit(submitter, Batch.Source.API, files)
    assert len(outcome.studies) == 30
    for study in outcome.studies:
        assert storage.matches(settings.MEDIA_ROOT / study.file.name, study.sha256, study.size_bytes)


def test_a_failure_among_many_files_stored_on_threads_leaves_nothing(submitter, settings, monkeypatch):
    """Writes still running when one fails finish first, then every file the submission wrote is removed."""
    real_copy = shutil.copyfileobj
    calls = []

    def copy(source, target, length=0):
        calls.append(1)
        if len(calls) == 25:
            raise OSError(errno.EIO, "Input/output error")
        if len(calls) > 25:
            time.sleep(0.2)  # writes still running when the failure is noticed
        return real_copy(source, target, length)

    monkeypatch.setattr(storage.shutil, "copyfileobj", copy)
    files = [(f"{i}.jpeg", io.BytesIO(XRAYS[i % len(XRAYS)].read_bytes() + b"#%d" % i)) for i in range(40)]
    with pytest.raises(storage.StorageUnavailable):
        submit(submitter, Batch.Source.API, files)
    assert 25 <= len(calls) < 40, "storing stops starting new writes once one has failed"
    assert not Study.objects.exists()
    assert not Batch.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


def test_a_copy_that_silently_comes_out_short_is_refused_and_removed(settings, monkeypatch):
    """No error from the write, yet fewer bytes on disk than uploaded: never renamed into place."""
    data = XRAYS[2].read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def short_copy(source, target, length=0):
        target.write(source.read(len(data) - 10))

    monkeypatch.setattr(storage.shutil, "copyfileobj", short_copy)
    with pytest.raises(storage.StorageUnavailable):
        storage.store_verified("studies/x/short.jpg", io.BytesIO(data), sha, len(data))
    assert stored_files(settings.MEDIA_ROOT) == []


@pytest.fixture
def synced(monkeypatch):
    """The paths of everything fsynced, files and folders, in order."""
    real_fsync = storage.os.fsync
    paths = []

    def fsync(fd):
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    return paths


def test_a_submission_makes_the_names_of_its_new_files_durable_before_its_rows_exist(
    submitter, settings, monkeypatch, synced
):
    """A rename into place survives a crash only once its folder is synced; a row must never point at a lost name."""
    real_sync = storage.sync_folders
    rows_when_synced = []

    def sync_folders(names):
        rows_when_synced.append(Study.objects.count())
        real_sync(names)

    monkeypatch.setattr(storage, "sync_folders", sync_folders)
    files = [(f"{i}.jpeg", io.BytesIO(XRAYS[i % len(XRAYS)].read_bytes() + b"#%d" % i)) for i in range(12)]
    outcome = submit(submitter, Batch.Source.API, files)
    stored = [Path(settings.MEDIA_ROOT) / study.file.name for study in outcome.studies]
    folders = {path.parent for path in stored} | {Path(settings.MEDIA_ROOT) / "studies"}
    assert folders <= set(synced)
    for path in stored:  # each file's bytes too, under its temporary name beside the final one
        assert any(s.parent == path.parent and s.name.startswith(f".{path.name}.") for s in synced)
    assert rows_when_synced == [0]  # once for the whole submission, before the rows were written


def test_a_folder_that_cannot_be_synced_fails_the_submission_and_leaves_nothing(submitter, settings, monkeypatch):
    real_fsync = storage.os.fsync

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).is_dir():
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    files = [(f"{i}.jpeg", io.BytesIO(XRAYS[i].read_bytes())) for i in range(2)]
    with pytest.raises(storage.StorageUnavailable):
        submit(submitter, Batch.Source.API, files)
    assert not Study.objects.exists()
    assert not Batch.objects.exists()
    assert stored_files(settings.MEDIA_ROOT) == []


def test_a_file_stored_on_its_own_has_its_folder_synced(settings, synced):
    """What the DICOM receiver does before it answers a C-STORE with success."""
    data = XRAYS[3].read_bytes()
    assert storage.store_verified("studies/zz/one.jpg", io.BytesIO(data), hashlib.sha256(data).hexdigest(), len(data))
    folder = Path(settings.MEDIA_ROOT) / "studies" / "zz"
    assert synced[-2:] == sorted([folder.parent, folder])  # after the file itself
