"""STOW-RS: multipart/related DICOM over HTTP, answered as PS3.18 says."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.encaps import encapsulate

from harness.dicom_peers import radiograph_copies
from screening.models import Batch, ReceivedInstance, Study
from tests.conftest import FIXTURES, token_client

BOUNDARY = "DICOMwebBoundary42"


def multipart(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(client, body: bytes, content_type: str | None = None):
    return client.post(
        "/dicomweb/studies",
        data=body,
        content_type=content_type or f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        HTTP_ACCEPT="application/dicom+json",
    )


def uids(response, tag: str) -> list[str]:
    return [item["00081155"]["Value"][0] for item in response.json().get(tag, {}).get("Value", [])]


@pytest.fixture
def instances(tmp_path):
    return [p.read_bytes() for p in radiograph_copies(tmp_path / "in", 3)]


def test_all_parts_stored_is_200_with_their_references(
    submitter, instances, publish, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = stow(token_client(submitter), multipart(*instances))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    expected = [str(pydicom.dcmread(io.BytesIO(i)).SOPInstanceUID) for i in instances]
    assert uids(response, "00081199") == expected
    batch = Batch.objects.get()
    assert batch.source == Batch.Source.DICOMWEB
    assert batch.submitted_by == submitter
    assert sorted(Study.objects.values_list("sop_instance_uid", flat=True)) == sorted(expected)
    assert sorted(i for call in publish.call_args_list for i in call.args[0]) == sorted(
        Study.objects.values_list("pk", flat=True)
    )


def test_a_resent_instance_is_stored_once(submitter, instances, publish):
    client = token_client(submitter)
    assert stow(client, multipart(instances[0])).status_code == 200
    assert stow(client, multipart(instances[0])).status_code == 200
    assert ReceivedInstance.objects.count() == 1
    assert Study.objects.count() == 1


def test_some_parts_failing_is_202_with_each_failure_reason(submitter, instances, publish):
    ct = (FIXTURES / "bad" / "ct_slice.dcm").read_bytes()
    truncated = (FIXTURES / "bad" / "dicom_truncated.dcm").read_bytes()
    response = stow(token_client(submitter), multipart(instances[0], ct, truncated))
    assert response.status_code == 202
    assert len(uids(response, "00081199")) == 1
    reasons = [item["00081197"]["Value"][0] for item in response.json()["00081198"]["Value"]]
    assert reasons == [0x0122, 0xC000]
    assert Study.objects.count() == 1


def test_nothing_stored_is_409(submitter, publish):
    response = stow(token_client(submitter), multipart((FIXTURES / "bad" / "dicom_no_pixel_data.dcm").read_bytes()))
    assert response.status_code == 409
    assert not Study.objects.exists()


def test_other_media_types_are_415_and_a_broken_body_is_400(submitter, instances):
    client = token_client(submitter)
    assert stow(client, multipart(instances[0]), content_type="application/dicom").status_code == 415
    assert (
        stow(client, b"--nope--", f"multipart/related; type=application/dicom; boundary={BOUNDARY}").status_code == 400
    )
    truncated = multipart(instances[0])[:-40]  # no closing boundary
    assert stow(client, truncated).status_code == 400
    assert not Study.objects.exists()


def test_anonymous_and_non_submitting_users_are_refused(radiologist, instances):
    from django.test import Client

    assert stow(Client(), multipart(instances[0])).status_code == 401
    assert stow(token_client(radiologist), multipart(instances[0])).status_code == 403
    assert not Study.objects.exists()


def with_transfer_syntax(instance: bytes, syntax: str) -> bytes:
    """The same instance, its file meta naming ``syntax`` (the data set itself is unchanged)."""
    dataset = pydicom.dcmread(io.BytesIO(instance))
    dataset.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def failures(response) -> list[tuple[str, int]]:
    """(SOP Instance UID or "", FailureReason) of each failed part, in the order sent."""
    return [
        ((item["00081155"].get("Value") or [""])[0], item["00081197"]["Value"][0])
        for item in response.json().get("00081198", {}).get("Value", [])
    ]


def test_each_part_is_judged_on_its_own_an_unknown_transfer_syntax_and_garbage_fail_and_the_good_part_is_stored(
    submitter, instances, publish, django_capture_on_commit_callbacks
):
    good, unknown_syntax = instances[0], with_transfer_syntax(instances[1], "1.2.3.4.5")
    garbage = b"this is not a DICOM instance\x00\x01\x02" * 20
    with django_capture_on_commit_callbacks(execute=True):
        response = stow(token_client(submitter), multipart(good, unknown_syntax, garbage))
    assert response.status_code == 202
    assert response["Content-Type"] == "application/dicom+json"
    good_uid = str(pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID)
    assert uids(response, "00081199") == [good_uid]
    unknown_uid = str(pydicom.dcmread(io.BytesIO(unknown_syntax)).SOPInstanceUID)
    assert failures(response) == [(unknown_uid, 0xC122), ("", 0xC000)]
    study = Study.objects.get()
    assert study.sop_instance_uid == good_uid
    assert ReceivedInstance.objects.get().study == study
    assert [i for call in publish.call_args_list for i in call.args[0]] == [study.pk]


def test_a_part_whose_transfer_syntax_the_listener_would_not_accept_fails_with_0xc122(submitter, instances, publish):
    dataset = pydicom.dcmread(io.BytesIO(instances[0]))
    dataset.PixelData = encapsulate([dataset.PixelData])
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: a video syntax, no decoder here
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    mpeg2 = out.getvalue()
    response = stow(token_client(submitter), multipart(mpeg2))
    assert response.status_code == 409
    assert [reason for _uid, reason in failures(response)] == [0xC122]
    assert not Study.objects.exists()
    assert not Batch.objects.exists()


def test_a_part_that_is_not_application_dicom_fails_with_0xc000_and_the_others_are_stored(
    submitter, instances, publish
):
    body = multipart(instances[0])[: -len(f"--{BOUNDARY}--\r\n")]
    body += f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + b"\xff\xd8\xff\xe0 a JPEG" + b"\r\n"
    body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instances[1] + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    response = stow(token_client(submitter), body)
    assert response.status_code == 202
    assert len(uids(response, "00081199")) == 2
    assert [reason for _uid, reason in failures(response)] == [0xC000]
    assert Study.objects.count() == 2


def test_a_part_with_a_damaged_element_fails_with_0xc000_not_an_error_page(submitter, instances, publish):
    accession = b"\x08\x00\x50\x00SH"  # (0008,0050) AccessionNumber, explicit VR little endian
    assert instances[0].count(accession) == 1
    damaged = instances[0].replace(accession, b"\x08\x00\x50\x00Q!")  # a VR that does not exist
    response = stow(token_client(submitter), multipart(instances[1], damaged))
    assert response.status_code == 202
    assert [reason for _uid, reason in failures(response)] == [0xC000]
    assert Study.objects.count() == 1


def test_a_part_the_database_refuses_is_rolled_back_alone_and_the_parts_after_it_are_stored(
    submitter, instances, publish
):
    """Each part has its own transaction: one the database refuses (a NUL in a text value) undoes nothing else."""
    dataset = pydicom.dcmread(io.BytesIO(instances[1]))
    dataset.AccessionNumber = "AB\x00CD"
    refused = io.BytesIO()
    dataset.save_as(refused, enforce_file_format=True)
    response = stow(token_client(submitter), multipart(instances[0], refused.getvalue(), instances[2]))
    assert response.status_code == 202
    assert uids(response, "00081199") == [
        str(pydicom.dcmread(io.BytesIO(i)).SOPInstanceUID) for i in (instances[0], instances[2])
    ]
    assert failures(response) == [(str(dataset.SOPInstanceUID), 0xC000)]
    assert Study.objects.count() == 2
    assert Batch.objects.get().files_received == 2
