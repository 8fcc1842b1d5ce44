"""The C-STORE listener, driven by pynetdicom's own SCU: statuses, refusals, resends.

The listener runs in this process (its associations in their own threads,
with their own database connections, hence transactional tests).
"""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context
from pynetdicom.sop_class import CTImageStorage, DigitalXRayImageStorageForPresentation, Verification

from screening import storage
from screening.dicom.listener import Listener
from screening.dicom.nodes import parse_callers
from screening.models import AuditEvent, Batch, ReceivedInstance, Study
from tests.conftest import FIXTURES
from tests.dicom_peers import RADIOGRAPH, free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener(publish):
    port = free_port()
    node = Listener(ae_title="PNEUMO", callers=parse_callers(["MODALITY", "*@127.0.0.1"]))
    node.start(("127.0.0.1", port), block=False)
    node.port = port
    yield node
    node.stop()


def instance(**changes) -> pydicom.Dataset:
    dataset = pydicom.dcmread(RADIOGRAPH)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    return dataset


def associate(port: int, *, calling: str = "MODALITY", contexts=None):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    contexts = contexts or [
        build_context(Verification),
        build_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian),
    ]
    return ae.associate("127.0.0.1", port, contexts=contexts, ae_title="PNEUMO")


def store(port: int, datasets, **kwargs) -> list[int]:
    assoc = associate(port, **kwargs)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_echo_succeeds(listener):
    assoc = associate(listener.port)
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()
    assert not Batch.objects.exists(), "an echo must not create an empty batch"


def test_stored_instances_become_one_queued_batch_with_their_dicom_identity(listener, publish):
    datasets = [instance(AccessionNumber="ACC-77", StudyDate="20261130") for _ in range(3)]
    assert store(listener.port, datasets) == [0x0000] * 3

    batch = Batch.objects.get()
    assert batch.source == Batch.Source.DICOM and batch.files_received == 3
    assert batch.submitted_by.username == "dicom-receiver" and not batch.submitted_by.has_usable_password()
    assert "MODALITY" in batch.name
    studies = Study.objects.filter(batch=batch).order_by("pk")
    assert [s.sop_instance_uid for s in studies] == [str(d.SOPInstanceUID) for d in datasets]
    first = studies[0]
    assert first.format == Study.Format.DICOM and first.accession_number == "ACC-77"
    assert first.study_instance_uid == str(datasets[0].StudyInstanceUID)
    assert first.series_instance_uid == str(datasets[0].SeriesInstanceUID)
    assert first.study_date.isoformat() == "2026-11-30"
    assert pydicom.dcmread(first.file.path).SOPInstanceUID == datasets[0].SOPInstanceUID
    # Handed to the workers (all three, in one chunk when the association ended).
    published = sorted(i for call in publish.call_args_list for i in call.args[0])
    assert published == sorted(s.pk for s in studies)
    assert set(studies.values_list("status", flat=True)) == {Study.Status.QUEUED}
    assert ReceivedInstance.objects.filter(calling_ae="MODALITY").count() == 3
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SUBMIT, object_id=str(batch.pk)).exists()


def test_a_resent_instance_is_a_success_that_adds_nothing(listener):
    dataset = instance()
    assert store(listener.port, [dataset]) == [0x0000]
    assert store(listener.port, [dataset]) == [0x0000]
    assert Study.objects.count() == 1 and ReceivedInstance.objects.count() == 1


def test_an_unknown_calling_ae_from_another_host_is_refused_at_association(publish):
    port = free_port()
    node = Listener(ae_title="PNEUMO", callers=parse_callers(["MODALITY"]))
    node.start(("127.0.0.1", port), block=False)
    try:
        assoc = associate(port, calling="STRANGER")
        assert assoc.is_rejected
        assert associate(port, calling="MODALITY").is_established
    finally:
        node.stop()


def test_no_allowed_callers_refuses_everyone(publish):
    port = free_port()
    node = Listener(ae_title="PNEUMO", callers=())
    node.start(("127.0.0.1", port), block=False)
    try:
        assert associate(port, calling="MODALITY").is_rejected
    finally:
        node.stop()


def test_a_sop_class_we_do_not_screen_gets_no_presentation_context(listener):
    assoc = associate(listener.port, contexts=[build_context(CTImageStorage, ExplicitVRLittleEndian)])
    # pynetdicom refuses an association whose every context was rejected.
    assert not assoc.is_established
    assert not Study.objects.exists()


@pytest.mark.parametrize("name", ["dicom_truncated.dcm", "dicom_no_pixel_data.dcm"])
def test_a_damaged_dataset_is_answered_cannot_understand(listener, name):
    # Sent from the file as it is: pynetdicom reads only its file meta and passes the rest on untouched.
    assert store(listener.port, [FIXTURES / "bad" / name]) == [0xC000]
    assert not Study.objects.exists()


def test_storage_failure_answers_out_of_resources_and_keeps_nothing(listener, monkeypatch):
    def full(*args, **kwargs):
        raise storage.StorageUnavailable(storage.StorageUnavailable.message)

    monkeypatch.setattr(storage, "store_verified", full)
    assert store(listener.port, [instance()]) == [0xA700]
    assert not Study.objects.exists() and not ReceivedInstance.objects.exists()


def test_an_instance_over_the_size_limit_is_refused(listener, settings):
    settings.SCREENING_MAX_FILE_BYTES = 10_000
    assert store(listener.port, [instance()]) == [0xC000]
    assert not Study.objects.exists()


def test_dicom_echo_tells_a_listening_node_a_refusing_one_and_nothing_apart(listener, settings, publish):
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("dicom_echo", f"PNEUMO@127.0.0.1:{listener.port}", stdout=out)
    assert "OK — C-ECHO success" in out.getvalue()

    strict = Listener(ae_title="PNEUMO", callers=parse_callers(["MODALITY"]))  # our AE title is not allowed there
    port = free_port()
    strict.start(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(CommandError, match="did not answer"):
            call_command("dicom_echo", f"PNEUMO@127.0.0.1:{port}", stdout=io.StringIO())
        settings.DICOM_PORT, settings.DICOM_BIND = port, "0.0.0.0"
        out = io.StringIO()
        call_command("dicom_echo", "--listener", stdout=out)  # a rejection still proves it is up
        assert "rejected" in out.getvalue()
    finally:
        strict.stop()
    with pytest.raises(CommandError, match="did not answer"):
        call_command("dicom_echo", f"PACS@127.0.0.1:{free_port()}", stdout=io.StringIO())
    settings.DICOM_DESTINATIONS = ()
    with pytest.raises(CommandError, match="No node to echo"):
        call_command("dicom_echo", stdout=io.StringIO())
