"""Site validation: a hospital measures the model on its own labelled studies before adopting it."""

import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from PIL import Image, ImageOps

from screening import site_validation
from screening.models import AuditEvent, Result, Review, SiteSetting, SiteValidation, SiteValidationCase, Study
from screening.scoring import score_chunk
from tests.conftest import ORIGINALS, XRAYS, logged_in, named
from tests.factories import batch_for, scored_study


def mirrored(path) -> bytes:
    buffer = io.BytesIO()
    ImageOps.mirror(Image.open(path).convert("L")).save(buffer, format="PNG")
    return buffer.getvalue()


def labelled_zip() -> bytes:
    """Five normal and six pneumonia fixture films in NORMAL/ and PNEUMONIA/ folders, plus one unlabelled file."""
    normals = [p for p in XRAYS + ORIGINALS if "NORMAL" in p.name or p.parent.name == "NORMAL"]
    pneumonias = [p for p in XRAYS + ORIGINALS if p not in normals]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in normals:
            archive.writestr(f"site/NORMAL/{path.name}", path.read_bytes())
        for path in pneumonias:
            archive.writestr(f"site/PNEUMONIA/{path.name}", path.read_bytes())
        archive.writestr("site/PNEUMONIA/mirrored.png", mirrored(pneumonias[0]))
        archive.writestr("site/loose.jpeg", mirrored(normals[0]))
    return buffer.getvalue()


def run_queue(publish):
    """Score what the submission published, with the real model, gate and population check."""
    from screening.serving import get_gate, get_population_check, get_screener

    for call in publish.call_args_list:
        score_chunk(call.args[0], get_screener(), get_gate(), get_population_check())
    publish.reset_mock()


def cases(validation, pairs):
    """Factory cases: (probability, is_pneumonia) pairs scored by the validation's model version."""
    batch = batch_for(validation.created_by)
    for probability, pneumonia in pairs:
        study = scored_study(batch, probability)
        Result.objects.filter(study=study).update(model_version=validation.model_version)
        SiteValidationCase.objects.create(validation=validation, study=study, pneumonia=pneumonia)


@pytest.fixture
def validation(admin_user):
    from screening.serving import current_model_version

    return SiteValidation.objects.create(
        created_by=admin_user, source=SiteValidation.Source.LABELLED_FILES, model_version=current_model_version()
    )


def test_labels_come_from_the_nearest_labelled_folder():
    assert site_validation.label_from_name("site.zip/NORMAL/a.jpeg") is False
    assert site_validation.label_from_name("PNEUMONIA/x/NORMAL/b.png") is False
    assert site_validation.label_from_name("pneumonia/c.dcm") is True
    assert site_validation.label_from_name("loose.jpeg") is None
    assert site_validation.label_from_name("NORMAL.jpeg") is None


def test_a_separating_report_allows_adoption_and_adopting_is_audited(validation, admin_user):
    cases(validation, [(0.05 * i, False) for i in range(1, 7)] + [(0.6 + 0.05 * i, True) for i in range(6)])
    report = site_validation.refresh(validation).report
    assert report["verdict"] == "adoptable" and report["auc"] == 1.0 and report["auc_ci"][0] >= 0.9
    assert report["roc"][0] == [0.0, 0.0] and report["roc"][-1] == [1.0, 1.0]
    assert report["small_sample"] and "optimistic" in report["message"]
    json.dumps(report, allow_nan=False)  # a JSON column refuses NaN (no case above a threshold: PPV undefined)
    setting = site_validation.adopt(validation, admin_user, target_sensitivity=1.0, prevalence=0.3)
    assert setting.threshold == pytest.approx(0.6) and setting.prevalence == 0.3
    event = AuditEvent.objects.get(action=AuditEvent.Action.SITE_ADOPTED)
    assert event.details["threshold"] == pytest.approx(0.6) and event.actor == admin_user


def test_a_report_that_does_not_separate_refuses_adoption_and_says_so(validation, admin_user):
    cases(validation, [(0.9, False), (0.2, True), (0.7, False), (0.4, True)] * 3)
    report = site_validation.refresh(validation).report
    assert report["verdict"] == "not_reliable" and "recommend not relying on it here" in report["message"]
    with pytest.raises(site_validation.AdoptionRefused, match="not relying"):
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)
    assert not SiteSetting.objects.exists()


def test_a_running_validation_cannot_be_adopted(validation, admin_user):
    cases(validation, [(0.1, False), (0.9, True)] * 5)
    Study.objects.filter(pk=validation.cases.first().study_id).update(status=Study.Status.QUEUED)
    assert site_validation.refresh(validation).report is None
    with pytest.raises(site_validation.AdoptionRefused, match="still running"):
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)


def test_bad_labelled_uploads_are_refused_with_a_reason_and_keep_nothing(admin_user, publish):
    def zipped(entries):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    unlabelled = zipped({"a.jpeg": XRAYS[0].read_bytes()})
    one_class = zipped({f"NORMAL/{p.name}": p.read_bytes() for p in XRAYS})
    all_refused = zipped({"NORMAL/a.jpeg": b"not an image", "PNEUMONIA/b.jpeg": b"nor this"})
    for data, words in [(unlabelled, "No labelled cases"), (one_class, "at least 5"), (all_refused, "No file")]:
        with pytest.raises(site_validation.ValidationRefused, match=words):
            site_validation.from_labelled_files(admin_user, [("x.zip", io.BytesIO(data))])
    assert not SiteValidation.objects.exists() and not Study.objects.exists()
    publish.assert_not_called()


def test_reviewed_studies_are_a_validation_source(admin_user, radiologist, submitter):
    from screening.serving import current_model_version

    batch = batch_for(submitter)
    for i in range(12):
        study = scored_study(batch, 0.1 + 0.07 * i)
        Result.objects.filter(study=study).update(model_version=current_model_version())
        finding = Review.Finding.PNEUMONIA if i >= 6 else Review.Finding.NORMAL
        Review.objects.create(study=study, reviewer=radiologist, finding=finding)
    unreadable = scored_study(batch, 0.5)
    Review.objects.create(study=unreadable, reviewer=radiologist, finding=Review.Finding.UNREADABLE)
    validation = site_validation.from_reviewed_studies(admin_user)
    assert validation.cases.count() == 12 and validation.cases.filter(pneumonia=True).count() == 6
    assert site_validation.refresh(validation).report["verdict"] == "adoptable"


def test_end_to_end_labelled_zip_report_adoption_and_later_results(
    admin_client, submitter, publish, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/site-validation/", {"archive": named("site.zip", labelled_zip())}, follow=True)
    validation = SiteValidation.objects.get()
    assert response.status_code == 200 and "Running" in response.content.decode()
    assert validation.cases.count() == 11 and validation.report is None
    run_queue(publish)
    page = admin_client.get(f"/site-validation/{validation.pk}/").content.decode()
    validation.refresh_from_db()
    report = validation.report
    assert report["cases"] == 11 and report["unlabelled"] == 1 and report["scored"] == 11
    assert report["auc"] > 0.9 and 'id="roc"' in page and "adopt-form" in page
    assert "Not yet validated at this site" in page

    adopted = admin_client.post(
        f"/site-validation/{validation.pk}/adopt/", {"target_sensitivity": "1.0", "prevalence": "0.3"}, follow=True
    )
    setting = SiteSetting.objects.get()
    assert "Adopted for model" in adopted.content.decode() and "Validated at this site" in adopted.content.decode()

    # Every later result records the setting; its label follows the site threshold.
    from screening.submission import submit

    with django_capture_on_commit_callbacks(execute=True):
        outcome = submit(submitter, "api", [(XRAYS[1].name, io.BytesIO(mirrored(XRAYS[1])))])
    run_queue(publish)
    result = Result.objects.get(study=outcome.studies[0])
    assert result.site_setting == setting and result.threshold == setting.threshold
    assert result.label == ("PNEUMONIA" if result.probability >= setting.threshold else "NORMAL")
    assert result.site_probability is not None and result.site_probability < result.probability  # 30 % < 74 %


def test_only_administrators_validate_and_adopt(client, submitter, radiologist, auditor, validation):
    cases(validation, [(0.1, False), (0.9, True)] * 5)
    for user in (submitter, radiologist):
        browser = logged_in(user)
        assert browser.get("/site-validation/").status_code == 403
        assert (
            browser.post(f"/site-validation/{validation.pk}/adopt/", {"target_sensitivity": "0.9"}).status_code == 403
        )
    reader = logged_in(auditor)
    assert reader.get(f"/site-validation/{validation.pk}/").status_code == 200
    assert reader.post("/site-validation/", {"use_reviewed": "on"}).status_code == 403
    assert reader.post(f"/site-validation/{validation.pk}/adopt/", {"target_sensitivity": "0.9"}).status_code == 403
    assert not SiteSetting.objects.exists()


def test_the_command_refuses_non_administrators_and_a_folder_without_labels(radiologist, admin_user, tmp_path):
    with pytest.raises(CommandError, match="not an active administrator"):
        call_command("site_validation", str(tmp_path), "--user", radiologist.username)
    (tmp_path / "a.jpeg").write_bytes(XRAYS[0].read_bytes())
    with pytest.raises(CommandError, match="No labelled cases"):
        call_command("site_validation", str(tmp_path), "--user", admin_user.username)


def test_undefined_figures_are_stored_as_none_not_nan():
    figures = {"ppv": float("nan"), "sensitivity": 0.5, "confusion": {"tp": 0, "odd": float("nan")}}
    assert site_validation._defined(figures) == {"ppv": None, "sensitivity": 0.5, "confusion": {"tp": 0, "odd": None}}
