"""Results going back to PACS: planned with the result, sent until they arrive, once.

The destination is pynetdicom's own storage SCP in this process; the real
PACS (Orthanc) is in ``test_dicom_e2e``. Scoring runs the shipped model.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pydicom
import pytest
from django.utils import timezone
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from harness.dicom_peers import free_port, radiograph_copies
from screening.dicom import outbox
from screening.dicom.nodes import Destination
from screening.intake.submission import submit
from screening.models import Batch, Delivery, Result, Study
from tests.conftest import XRAYS, token_client
from worker.scoring import score_chunk


@pytest.fixture
def screener(served_explainer):
    return served_explainer


class Pacs:
    """A storage SCP that keeps what it receives and answers ``status``."""

    def __init__(self, port: int, status: int = 0x0000):
        self.port, self.status, self.received = port, status, []
        self.ae = AE(ae_title="PACS")
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            self.ae.add_supported_context(sop_class)
        self.server = None

    def _on_store(self, event):
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        self.received.append(dataset)
        return self.status

    def __enter__(self):
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


@pytest.fixture
def pacs_port(settings):
    port = free_port()
    settings.DICOM_DESTINATIONS = (Destination("PACS", "127.0.0.1", port),)
    settings.DICOM_TIMEOUT_SECONDS = 5
    return port


@pytest.fixture
def scored_dicom_study(submitter, screener, tmp_path, publish, django_capture_on_commit_callbacks):
    """Submit and score a DICOM radiograph, running what waits for the commit (the deliveries' publishing)."""

    def make() -> Study:
        (path,) = radiograph_copies(tmp_path / "in", 1)
        outcome = submit(submitter, Batch.Source.API, [(path.name, io.BytesIO(path.read_bytes()))])
        with django_capture_on_commit_callbacks(execute=True):
            score_chunk([s.pk for s in outcome.studies], screener)
        return Study.objects.get(pk=outcome.studies[0].pk)

    return make


def make_due(*deliveries: Delivery) -> None:
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_down_destination_gets_each_object_once_when_it_is_back(
    scored_dicom_study, pacs_port, publish_deliveries, django_capture_on_commit_callbacks
):
    study = scored_dicom_study()
    assert study.status == Study.Status.DONE
    deliveries = list(Delivery.objects.filter(result__study=study).order_by("kind"))
    assert [(d.kind, d.destination, d.status) for d in deliveries] == [
        ("sc", f"PACS@127.0.0.1:{pacs_port}", "pending"),
        ("sr", f"PACS@127.0.0.1:{pacs_port}", "pending"),
    ]
    assert sorted(c.args[0] for c in publish_deliveries.call_args_list) == sorted(d.pk for d in deliveries)

    # Down: each stays pending, says why, and waits before the next try.
    for delivery in deliveries:
        assert outbox.send(delivery.pk) == Delivery.Status.PENDING
    for delivery in Delivery.objects.filter(pk__in=[d.pk for d in deliveries]):
        assert delivery.attempts == 1
        assert "could not be reached" in delivery.last_error
        assert delivery.next_attempt_at > timezone.now()
    assert outbox.queue_due() == 0
    assert outbox.send(deliveries[0].pk) == "skipped", "not due yet"

    with Pacs(pacs_port) as pacs:
        make_due(*deliveries)
        publish_deliveries.reset_mock()
        with django_capture_on_commit_callbacks(execute=True):
            assert outbox.queue_due() == 2
        assert len(publish_deliveries.call_args_list) == 2
        for call in publish_deliveries.call_args_list:
            outbox.send(call.args[0])
        # A duplicate message for a sent delivery sends nothing.
        outbox.send(deliveries[0].pk)
    assert sorted(str(d.SOPClassUID) for d in pacs.received) == sorted(
        [ComprehensiveSRStorage, SecondaryCaptureImageStorage]
    )
    for delivery in Delivery.objects.filter(pk__in=[d.pk for d in deliveries]):
        assert delivery.status == Delivery.Status.SENT
        assert delivery.dimse_status == 0
        assert delivery.sent_at
    report = next(d for d in pacs.received if d.SOPClassUID == ComprehensiveSRStorage)
    source = pydicom.dcmread(study.file.path)
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert report.PatientID == source.PatientID
    assert report.SeriesInstanceUID != source.SeriesInstanceUID
    capture = next(d for d in pacs.received if d.SOPClassUID == SecondaryCaptureImageStorage)
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert capture.pixel_array.shape == (source.Rows, source.Columns, 3)

    # "Send again" sends the same objects (same UIDs), so PACS files them once.
    with Pacs(pacs_port) as again:
        publish_deliveries.reset_mock()
        with django_capture_on_commit_callbacks(execute=True):
            assert outbox.send_again(Delivery.objects.filter(pk__in=[d.pk for d in deliveries])) == 2
        for call in publish_deliveries.call_args_list:
            outbox.send(call.args[0])
    assert sorted(str(d.SOPInstanceUID) for d in again.received) == sorted(str(d.SOPInstanceUID) for d in pacs.received)


def test_a_destination_that_refuses_the_object_fails_it_with_its_status(
    scored_dicom_study, submitter, screener, tmp_path, pacs_port, publish, publish_deliveries
):
    study = scored_dicom_study()
    with Pacs(pacs_port, status=0xA900):
        for delivery in Delivery.objects.filter(result__study=study):
            assert outbox.send(delivery.pk) == Delivery.Status.FAILED
    delivery = Delivery.objects.filter(result__study=study).first()
    assert delivery.dimse_status == 0xA900
    assert "0xA900" in delivery.last_error
    assert delivery.dimse_status_hex == "0xA900"


def test_a_destination_down_past_the_give_up_time_fails_the_delivery(
    scored_dicom_study, submitter, screener, tmp_path, pacs_port, publish, publish_deliveries, settings
):
    study = scored_dicom_study()
    Delivery.objects.filter(result__study=study).update(created_at=timezone.now() - timedelta(hours=100))
    delivery = Delivery.objects.filter(result__study=study).first()
    assert outbox.send(delivery.pk) == Delivery.Status.FAILED
    assert "could not be reached" in Delivery.objects.get(pk=delivery.pk).last_error


def test_a_purged_original_fails_the_delivery_with_a_reason(
    scored_dicom_study, submitter, screener, tmp_path, pacs_port, publish, publish_deliveries
):
    study = scored_dicom_study()
    Study.objects.filter(pk=study.pk).update(file_purged_at=timezone.now())
    delivery = Delivery.objects.filter(result__study=study).first()
    assert outbox.send(delivery.pk) == Delivery.Status.FAILED
    assert "retention" in Delivery.objects.get(pk=delivery.pk).last_error


def test_studies_that_are_not_dicom_have_nothing_to_send(submitter, screener, pacs_port, publish, publish_deliveries):
    outcome = submit(submitter, Batch.Source.API, [(XRAYS[0].name, io.BytesIO(XRAYS[0].read_bytes()))])
    score_chunk([s.pk for s in outcome.studies], screener)
    assert Result.objects.filter(study__batch=outcome.batch).exists()
    assert not Delivery.objects.exists()


def test_no_destination_means_no_deliveries(scored_dicom_study, submitter, screener, tmp_path, publish, settings):
    settings.DICOM_DESTINATIONS = ()
    study = scored_dicom_study()
    assert study.results.exists()
    assert not Delivery.objects.exists()


def test_the_study_page_shows_what_was_sent(
    scored_dicom_study, submitter, screener, tmp_path, pacs_port, publish, publish_deliveries
):
    from tests.conftest import logged_in

    study = scored_dicom_study()
    with Pacs(pacs_port):
        for delivery in Delivery.objects.filter(result__study=study):
            outbox.send(delivery.pk)
    page = logged_in(submitter).get(f"/studies/{study.pk}/").content.decode()
    assert 'id="deliveries"' in page
    assert "Structured report" in page
    assert "Sent" in page
    assert f"PACS@127.0.0.1:{pacs_port}" in page
    assert "2026-11-30" in page
    assert study.accession_number in page


# --- pulled rather than sent: the API's DICOM and FHIR downloads --------------


def test_the_report_and_overlay_download_as_dicom_for_the_submitter_only(
    scored_dicom_study, submitter, other_submitter, screener, tmp_path, publish, settings
):
    settings.DICOM_DESTINATIONS = ()
    study = scored_dicom_study()
    client = token_client(submitter)
    report = client.get(f"/api/v1/studies/{study.pk}/report.dcm")
    assert report.status_code == 200
    assert report["Content-Type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(report.content))
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.StudyInstanceUID == study.study_instance_uid
    overlay = client.get(f"/api/v1/studies/{study.pk}/overlay.dcm")
    assert pydicom.dcmread(io.BytesIO(overlay.content)).SOPClassUID == SecondaryCaptureImageStorage
    for path in ("report.dcm", "overlay.dcm", "fhir"):
        assert token_client(other_submitter).get(f"/api/v1/studies/{study.pk}/{path}").status_code == 404
        assert client.get(f"/api/v1/studies/999999/{path}").status_code == 404


def test_a_study_that_was_not_dicom_has_no_dicom_report(submitter, screener, publish):
    outcome = submit(submitter, Batch.Source.API, [(XRAYS[0].name, io.BytesIO(XRAYS[0].read_bytes()))])
    score_chunk([s.pk for s in outcome.studies], screener)
    response = token_client(submitter).get(f"/api/v1/studies/{outcome.studies[0].pk}/report.dcm")
    assert response.status_code == 404
    assert "not a DICOM file" in response.json()["error"]


def test_the_fhir_report_is_a_valid_diagnostic_report(
    scored_dicom_study, submitter, screener, tmp_path, publish, settings
):
    settings.DICOM_DESTINATIONS = ()
    study = scored_dicom_study()
    response = token_client(submitter).get(f"/api/v1/studies/{study.pk}/fhir")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    body = json.loads(response.content)
    report = DiagnosticReport.model_validate(body)
    assert report.status == "preliminary"
    result = study.results.get()
    observation = body["contained"][0]
    assert observation["valueQuantity"]["value"] == pytest.approx(result.probability, abs=1e-6)
    assert f"urn:oid:{study.study_instance_uid}" in json.dumps(body)
    assert body["effectiveDateTime"] == "2026-11-30"


def test_admin_sends_results_scored_before_the_destination_existed_once(
    scored_dicom_study, settings, publish_deliveries, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import User
    from django.test import Client

    settings.DICOM_DESTINATIONS = ()
    study = scored_dicom_study()
    assert not Delivery.objects.exists()
    settings.DICOM_DESTINATIONS = (Destination("PACS", "127.0.0.1", 104),)
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.org", "pw"))
    for expected in (2, 0):
        publish_deliveries.reset_mock()
        with django_capture_on_commit_callbacks(execute=True):
            page = admin.post(
                "/admin/screening/study/",
                {"action": "send_results_to_pacs", "_selected_action": [study.pk]},
                follow=True,
            )
        assert f"{expected} deliveries queued" in page.content.decode()
        assert len(publish_deliveries.call_args_list) == expected
    assert Delivery.objects.filter(result__study=study).count() == 2


def test_admin_send_again_is_for_superusers(scored_dicom_study, pacs_port, publish_deliveries, auditor):
    from tests.conftest import logged_in

    study = scored_dicom_study()
    delivery = Delivery.objects.filter(result__study=study).first()
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.FAILED)
    page = logged_in(auditor).get("/admin/screening/delivery/")
    assert page.status_code == 200
    assert "send_again" not in page.content.decode()
    logged_in(auditor).post("/admin/screening/delivery/", {"action": "send_again", "_selected_action": [delivery.pk]})
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.FAILED
