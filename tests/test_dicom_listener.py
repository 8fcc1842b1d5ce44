"""The C-STORE listener, driven by pynetdicom's own SCU and raw sockets: statuses, refusals, resends, limits.

The listener runs in this process (its associations in their own threads,
with their own database connections, hence transactional tests).
"""

from __future__ import annotations

import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context
from pynetdicom.sop_class import CTImageStorage, DigitalXRayImageStorageForPresentation, Verification

from harness.dicom_peers import (
    A_ASSOCIATE_RQ,
    P_DATA_TF,
    RADIOGRAPH,
    closed_by_peer,
    free_port,
    idle_connections,
    oversized_request,
    pdu_header,
)
from harness.worker_process import start_up
from screening.dicom.listener import Listener
from screening.dicom.nodes import parse_callers
from screening.intake import storage
from screening.models import AuditEvent, Batch, ReceivedInstance, Study
from tests.conftest import FIXTURES

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


def associate(port: int, *, calling: str = "MODALITY", contexts=None, source: str = "127.0.0.1"):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    contexts = contexts or [
        build_context(Verification),
        build_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian),
    ]
    return ae.associate("127.0.0.1", port, contexts=contexts, ae_title="PNEUMO", bind_address=(source, 0))


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
    assert batch.source == Batch.Source.DICOM
    assert batch.files_received == 3
    assert batch.submitted_by.username == "dicom-receiver"
    assert not batch.submitted_by.has_usable_password()
    assert "MODALITY" in batch.name
    studies = Study.objects.filter(batch=batch).order_by("pk")
    assert [s.sop_instance_uid for s in studies] == [str(d.SOPInstanceUID) for d in datasets]
    first = studies[0]
    assert first.format == Study.Format.DICOM
    assert first.accession_number == "ACC-77"
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
    assert Study.objects.count() == 1
    assert ReceivedInstance.objects.count() == 1


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
    assert not Study.objects.exists()
    assert not ReceivedInstance.objects.exists()


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


# --- peers that never become an accepted association -----------------------------------------


@pytest.fixture
def start_guarded(publish, settings):
    """Start a listener, on a free port, with small limits and a short association-request timeout."""
    started = []

    def start(request_timeout: int = 1) -> Listener:
        settings.DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS = request_timeout
        settings.DICOM_MAX_PDU_BYTES = 16384
        settings.DICOM_MAX_ASSOCIATIONS = 3
        settings.DICOM_MAX_ASSOCIATIONS_PER_PEER = 2
        node = Listener(ae_title="PNEUMO", callers=parse_callers(["MODALITY"]))
        node.port = free_port()
        node.start(("127.0.0.1", node.port), block=False)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def guarded(start_guarded):
    return start_guarded()


def wait_until_closed(sock, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not closed_by_peer(sock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_connection_that_sends_no_association_request_is_closed(guarded):
    [silent] = idle_connections(guarded.port, 1)
    with silent:
        assert wait_until_closed(silent)


def test_a_connection_trickling_its_association_request_is_closed(guarded):
    with idle_connections(guarded.port, 1)[0] as slow:
        slow.sendall(pdu_header(A_ASSOCIATE_RQ, 1000))
        deadline = time.monotonic() + 30
        while not closed_by_peer(slow) and time.monotonic() < deadline:
            try:
                slow.send(b"\0")  # 1,000 bytes at this pace would take over a minute
            except OSError:
                break
            time.sleep(0.1)
        assert wait_until_closed(slow, timeout=0)


def test_an_association_request_declaring_2_gib_is_closed_before_its_body_is_read(guarded):
    sock, sent = oversized_request(guarded.port, push=64 * 2**20)
    with sock:
        assert sent < 64 * 2**20, "the listener read 64 MiB of an association request"
        assert wait_until_closed(sock)
    assert associate(guarded.port).is_established  # and the listener still serves


def test_connections_without_an_association_do_not_count_against_the_limits(start_guarded):
    node = start_guarded(request_timeout=60)  # so that they are all still open during the store
    silent = idle_connections(node.port, 12)  # pynetdicom's own limit would count these
    try:
        assert store(node.port, [instance()]) == [0x0000]
        assert not any(closed_by_peer(s) for s in silent), "the idle connections closed before the store"
    finally:
        for sock in silent:
            sock.close()


def test_a_peer_address_over_its_limit_is_refused_transiently_while_other_addresses_get_through(guarded):
    first, second = associate(guarded.port), associate(guarded.port)
    assert first.is_established
    assert second.is_established
    third = associate(guarded.port)
    assert third.is_rejected
    answer = third.acceptor.primitive
    assert (answer.result, answer.result_source, answer.diagnostic) == (0x02, 0x03, 0x02)  # local limit exceeded
    elsewhere = associate(guarded.port, source="127.0.0.2")
    assert elsewhere.is_established
    first.release()
    deadline = time.monotonic() + 30  # the slot is free once the released association's thread has ended
    while not (again := associate(guarded.port)).is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert again.is_established
    for assoc in (second, elsewhere, again):
        assoc.release()


def test_the_listener_refuses_associations_past_its_total_limit(guarded):
    held = [associate(guarded.port, source=f"127.0.0.{i}") for i in (1, 2, 3)]
    assert all(a.is_established for a in held)
    assert associate(guarded.port, source="127.0.0.4").is_rejected
    for assoc in held:
        assoc.release()


def test_a_pdu_longer_than_the_maximum_announced_aborts_the_association(guarded):
    assoc = associate(guarded.port)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 16384
    assoc.dul.socket.send(pdu_header(P_DATA_TF, 100_000) + bytes(100_000))  # ignoring what was announced
    deadline = time.monotonic() + 30
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DICOM_MAX_PDU_BYTES", "0"),  # pynetdicom's "unlimited"
        ("DICOM_MAX_PDU_BYTES", "2147483648"),
        ("DICOM_ASSOCIATION_REQUEST_TIMEOUT_SECONDS", "0"),
        ("DICOM_MAX_ASSOCIATIONS_PER_PEER", "4x"),
    ],
)
def test_an_unbounded_or_malformed_listener_limit_stops_start_up_naming_the_variable(name, raw):
    done = start_up(**{name: raw})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr
