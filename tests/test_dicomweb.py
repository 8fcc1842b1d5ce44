"""STOW-RS: multipart/related DICOM over HTTP, answered as PS3.18 says."""

from __future__ import annotations

import io

import pydicom
import pytest

from screening.models import Batch, ReceivedInstance, Study
from tests.conftest import FIXTURES, token_client
from tests.dicom_peers import radiograph_copies

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
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom+json"
    expected = [str(pydicom.dcmread(io.BytesIO(i)).SOPInstanceUID) for i in instances]
    assert uids(response, "00081199") == expected
    batch = Batch.objects.get()
    assert batch.source == Batch.Source.DICOMWEB and batch.submitted_by == submitter
    assert sorted(Study.objects.values_list("sop_instance_uid", flat=True)) == sorted(expected)
    assert sorted(i for call in publish.call_args_list for i in call.args[0]) == sorted(
        Study.objects.values_list("pk", flat=True)
    )


def test_a_resent_instance_is_stored_once(submitter, instances, publish):
    client = token_client(submitter)
    assert stow(client, multipart(instances[0])).status_code == 200
    assert stow(client, multipart(instances[0])).status_code == 200
    assert ReceivedInstance.objects.count() == 1 and Study.objects.count() == 1


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
