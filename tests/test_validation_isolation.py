"""A site validation's labelled films are test cases, not patients: nothing clinical ever shows them.

The radiologists' worklist and its CSV export must read the same before and
after a validation runs through the real queue and model; the films' pages,
their FHIR and DICOM objects and their batch are not found, and a DICOM film
among them is never planned for PACS.
"""

import io
import zipfile

import pytest

from screening import triage
from screening.dicom.nodes import Destination
from screening.governance import site_validation
from screening.models import Batch, Delivery, SiteValidation, Study
from tests.conftest import FIXTURES, ORIGINALS, XRAYS, logged_in, token_client
from tests.factories import batch_for, scored_study, unscored_study
from tests.test_site_validation import run_queue


def labelled_zip_with_dicom() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in XRAYS:
            archive.writestr(f"site/{path.parent.name}/{path.name}", path.read_bytes())
        archive.writestr("site/NORMAL/child_ap.dcm", (FIXTURES / "dicom" / "child_ap.dcm").read_bytes())
        for path in ORIGINALS:
            archive.writestr(f"site/{path.name.split('__')[0]}/{path.name}", path.read_bytes())
    return buffer.getvalue()


def clinical_view(client) -> dict:
    """What radiologists see: every tab's rows and counts, and every tab's CSV export."""
    view = {}
    for tab in triage.TABS:
        page = client.get(f"/worklist/?tab={tab.slug}")
        rows = [(s.pk, s.score, s.review_status) for s in page.context["page"].object_list]
        export = b"".join(client.get(f"/worklist/export.csv?tab={tab.slug}").streaming_content).decode()
        view[tab.slug] = (rows, page.context["counts"], export)
    view["batches"] = client.get("/batches/").content.count(b'href="/batches/')
    return view


@pytest.mark.django_db
def test_a_validation_run_leaves_the_worklist_and_exports_unchanged_and_is_sent_nowhere(
    admin_user, submitter, radiologist, publish, publish_deliveries, settings, django_capture_on_commit_callbacks
):
    settings.DICOM_DESTINATIONS = (Destination("PACS", "127.0.0.1", 11112),)
    clinical = batch_for(submitter)
    for probability in (0.95, 0.4, 0.1):
        scored_study(clinical, probability)
    unscored_study(clinical, Study.Status.REJECTED)
    reader = logged_in(radiologist)
    before = clinical_view(reader)
    assert before["to-review"][1]["to-review"] == 3

    with django_capture_on_commit_callbacks(execute=True):
        validation = site_validation.from_labelled_files(
            admin_user, [("site.zip", io.BytesIO(labelled_zip_with_dicom()))], name="site.zip"
        )
    run_queue(publish)
    validation = site_validation.refresh(SiteValidation.objects.get(pk=validation.pk))
    films = Study.objects.filter(batch__kind=Batch.Kind.VALIDATION)
    assert validation.report is not None
    assert films.count() == 11
    assert films.filter(status=Study.Status.DONE, format=Study.Format.DICOM).exists()

    assert clinical_view(reader) == before
    assert not Delivery.objects.exists()
    assert not publish_deliveries.called
    api = token_client(radiologist)
    for film in films:
        assert reader.get(f"/studies/{film.pk}/").status_code == 404
        assert api.get(f"/api/v1/studies/{film.pk}/fhir").status_code == 404
        assert api.get(f"/api/v1/studies/{film.pk}/report.dcm").status_code == 404
    assert reader.get(f"/batches/{validation.batch_id}/export.csv").status_code == 404
    assert token_client(admin_user).get(f"/api/v1/batches/{validation.batch_id}").status_code == 404
