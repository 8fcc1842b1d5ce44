"""Site validation: a hospital measures the model on its own labelled studies before adopting it.

Adoption must hold only on enough independent evidence: the cases here carry
fingerprints, either random ones (images the model never saw) or the shipped
fingerprints of its real training images.
"""

import io
import json
import random
import zipfile

import pytest
from django.core.management import CommandError, call_command
from PIL import Image, ImageOps

from ml.serving.fingerprint import FILE_NAME
from ml.statistics.intervals import clopper_pearson
from screening.governance import site_validation
from screening.models import (
    AuditEvent,
    Batch,
    Result,
    Review,
    SiteSetting,
    SiteValidation,
    SiteValidationCase,
    Study,
)
from tests.conftest import ORIGINALS, XRAYS, logged_in, named
from tests.factories import batch_for, scored_study
from worker.scoring import score_chunk


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
    from worker.loaded_models import get_gate, get_population_check, get_screener

    for call in publish.call_args_list:
        score_chunk(call.args[0], get_screener(), get_gate(), get_population_check())
    publish.reset_mock()


_random = random.Random(20261207)


def new_image() -> str:
    """The fingerprint of an image the model never saw: 256 random bits are ~128 from every training image."""
    return f"{_random.getrandbits(256):064x}"


def training_fingerprints(label: str, count: int) -> list[str]:
    """Real fingerprints of the model's training images of ``label``, from the shipped file."""
    from screening.served_model import model_dir

    lines = (model_dir() / FILE_NAME).read_text().splitlines()
    found = [line.split(" ")[0] for line in lines if f"/{label}/" in line]
    return found[:count]


def cases(validation, pairs, fingerprints=None):
    """Factory cases: (probability, is_pneumonia) pairs scored by the validation's model version.

    Each study gets one of ``fingerprints`` in turn, else a new image's.
    """
    batch = batch_for(validation.created_by, kind=Batch.Kind.VALIDATION)
    fingerprints = list(fingerprints or [])
    for i, (probability, pneumonia) in enumerate(pairs):
        study = scored_study(batch, probability, fingerprint=fingerprints[i] if i < len(fingerprints) else new_image())
        Result.objects.filter(study=study).update(model_version=validation.model_version)
        SiteValidationCase.objects.create(validation=validation, study=study, pneumonia=pneumonia)


def separated(n_normal=100, n_pneumonia=100):
    """Normals scoring 0.00-0.29, pneumonias 0.30-0.99: perfectly separated."""
    normals = [(0.29 * i / max(n_normal - 1, 1), False) for i in range(n_normal)]
    pneumonias = [(0.30 + 0.69 * i / max(n_pneumonia - 1, 1), True) for i in range(n_pneumonia)]
    return normals + pneumonias


@pytest.fixture
def validation(admin_user):
    from screening.served_model import current_model_version

    return SiteValidation.objects.create(
        created_by=admin_user, source=SiteValidation.Source.LABELLED_FILES, model_version=current_model_version()
    )


def test_labels_come_from_the_nearest_labelled_folder():
    assert site_validation.label_from_name("site.zip/NORMAL/a.jpeg") is False
    assert site_validation.label_from_name("PNEUMONIA/x/NORMAL/b.png") is False
    assert site_validation.label_from_name("pneumonia/c.dcm") is True
    assert site_validation.label_from_name("loose.jpeg") is None
    assert site_validation.label_from_name("NORMAL.jpeg") is None


def test_enough_independent_cases_allow_adoption_at_the_exact_lower_bound(validation, admin_user):
    pairs = separated() + [(0.5, False), (0.2, True)]  # one false positive, one missed pneumonia
    cases(validation, pairs)
    report = site_validation.refresh(validation).report
    assert report["verdict"] == "adoptable", report["message"]
    assert report["refusals"] == [], report["message"]
    assert report["training_overlap"]["matched"] == 0
    assert report["training_overlap"]["checked"] == 202
    assert report["roc"][0] == [0.0, 0.0]
    assert report["roc"][-1] == [1.0, 1.0]
    json.dumps(report, allow_nan=False)  # a JSON column refuses NaN (no case above a threshold: PPV undefined)

    setting = site_validation.adopt(validation, admin_user, target_sensitivity=0.90, prevalence=0.3)
    pneumonia_scores = sorted((p for p, y in pairs if y), reverse=True)
    caught = next(k for k in range(1, 102) if clopper_pearson(k, 101)[0] >= 0.90)
    assert setting.threshold == pytest.approx(pneumonia_scores[caught - 1])
    assert clopper_pearson(caught - 1, 101)[0] < 0.90  # one case fewer and the bound would miss the target
    event = AuditEvent.objects.get(action=AuditEvent.Action.SITE_ADOPTED)
    assert event.details["sensitivity_ci"][0] >= 0.90
    assert event.actor == admin_user
    assert event.details["confusion"]["tp"] == caught
    assert len(event.details["specificity_ci"]) == 2


def test_a_target_the_sample_cannot_bound_is_refused_with_the_cases_it_needs(validation, admin_user):
    cases(validation, separated())
    assert site_validation.refresh(validation).report["verdict"] == "adoptable"
    with pytest.raises(site_validation.AdoptionRefused, match="at least 368 pneumonia cases") as refused:
        site_validation.adopt(validation, admin_user, target_sensitivity=0.99, prevalence=None)
    assert "even catching every one, the lower bound is 0.964" in str(refused.value)
    assert not SiteSetting.objects.exists()
    proposals = {p["target"]: p for p in validation.report["proposals"]}
    assert proposals[0.95]["threshold"] == pytest.approx(0.30)  # 100 of 100 needed: the lowest pneumonia
    assert proposals[0.95]["ci"]["sensitivity"][0] == pytest.approx(clopper_pearson(100, 100)[0])


def test_twenty_and_twenty_training_films_are_refused_for_too_few_and_overlap(validation, admin_user):
    known = training_fingerprints("NORMAL", 20) + training_fingerprints("PNEUMONIA", 20)
    cases(validation, separated(20, 20), fingerprints=known)
    report = site_validation.refresh(validation).report
    assert report["training_overlap"]["matched"] == 40
    assert report["n_normal"] == report["n_pneumonia"] == 0
    assert set(report["refusals"]) == {"too_few", "training_overlap"}
    assert report["verdict"] == "insufficient"
    assert report["training_overlap"]["cases"][0]["training_image"].startswith("train/")
    with pytest.raises(site_validation.AdoptionRefused) as refused:
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)
    message = str(refused.value)
    assert "40 of 40 cases are images the model was trained, calibrated or selected on" in message
    assert "at least 100 scored cases of each class" in message
    assert "100 more pneumonia" in message
    assert not SiteSetting.objects.exists()


def test_training_films_among_many_new_ones_refuse_adoption_and_leave_the_figures(validation, admin_user):
    """150 + 150 new films score perfectly; 10 training films mixed in (3 %) are named and refuse adoption."""
    known = training_fingerprints("PNEUMONIA", 5) + training_fingerprints("NORMAL", 5)
    training = [(0.1, True)] * 5 + [(0.9, False)] * 5  # scored the wrong way round: would drag the AUC down
    cases(validation, training + separated(150, 150), fingerprints=known)
    report = site_validation.refresh(validation).report
    assert report["refusals"] == ["training_overlap"]
    assert report["verdict"] == "not_adoptable"
    assert report["auc"] == 1.0
    assert report["n_pneumonia"] == report["n_normal"] == 150
    assert report["training_overlap"]["matched"] == 10
    assert len(report["training_overlap"]["cases"]) == 10
    with pytest.raises(site_validation.AdoptionRefused, match="10 of 310 cases are images the model was trained"):
        site_validation.adopt(validation, admin_user, target_sensitivity=0.9, prevalence=None)


def test_a_perfectly_separated_small_sample_keeps_a_wide_auc_interval(validation, settings):
    settings.SITE_VALIDATION_MIN_PER_CLASS = 20
    cases(validation, separated(20, 20))
    report = site_validation.refresh(validation).report
    low, high = report["auc_ci"]
    assert report["auc"] == 1.0
    assert high == 1.0
    assert 0.85 < low < 0.90
    assert report["refusals"] == ["auc_low"]
    assert "not shown to work" in report["message"]


def test_a_report_that_does_not_separate_refuses_adoption_and_says_so(validation, admin_user):
    cases(validation, [(0.9, False), (0.2, True), (0.7, False), (0.4, True)] * 30)
    report = site_validation.refresh(validation).report
    assert report["verdict"] == "not_reliable"
    assert "recommend not relying on it here" in report["message"]
    with pytest.raises(site_validation.AdoptionRefused, match="not relying"):
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)
    assert not SiteSetting.objects.exists()


def test_a_report_from_before_the_evidence_rules_cannot_be_adopted(validation, admin_user):
    validation.report = {"verdict": "adoptable", "auc": 1.0, "auc_ci": [1.0, 1.0], "n_pneumonia": 8, "n_normal": 8}
    validation.save()
    with pytest.raises(site_validation.AdoptionRefused, match="run a new validation"):
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)


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
    assert not SiteValidation.objects.exists()
    assert not Study.objects.exists()
    publish.assert_not_called()


def test_reviewed_studies_are_a_validation_source_fingerprinted_from_their_files(
    admin_user, radiologist, submitter, settings
):
    from screening.served_model import current_model_version

    batch = batch_for(submitter)
    for i in range(12):
        study = scored_study(batch, 0.1 + 0.07 * i, media_root=settings.MEDIA_ROOT)
        Result.objects.filter(study=study).update(model_version=current_model_version())
        finding = Review.Finding.PNEUMONIA if i >= 6 else Review.Finding.NORMAL
        Review.objects.create(study=study, reviewer=radiologist, finding=finding)
    unreadable = scored_study(batch, 0.5)
    Review.objects.create(study=unreadable, reviewer=radiologist, finding=Review.Finding.UNREADABLE)
    validation = site_validation.from_reviewed_studies(admin_user)
    assert validation.cases.count() == 12
    assert validation.cases.filter(pneumonia=True).count() == 6
    report = site_validation.refresh(validation).report
    assert report["training_overlap"]["checked"] == 12
    assert report["training_overlap"]["unchecked"] == 0
    assert Study.objects.exclude(fingerprint="").count() == 12
    assert report["refusals"] == ["too_few", "auc_low"]
    assert "94 more pneumonia and 94 more normal" in report["message"]


def test_end_to_end_a_zip_of_training_films_is_scored_apart_named_and_refused(
    admin_client, submitter, radiologist, publish, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/site-validation/", {"archive": named("site.zip", labelled_zip())}, follow=True)
    validation = SiteValidation.objects.get()
    assert response.status_code == 200
    assert "Running" in response.content.decode()
    assert validation.cases.count() == 11
    assert validation.report is None
    assert validation.batch.kind == Batch.Kind.VALIDATION
    run_queue(publish)
    page = admin_client.get(f"/site-validation/{validation.pk}/").content.decode()
    validation.refresh_from_db()
    report = validation.report
    assert report["cases"] == 11
    assert report["unlabelled"] == 1
    assert report["scored"] == 11
    # The worker fingerprinted each film: the fixtures' 224x224 copies and full-resolution originals are
    # training images; the mirrored film is not found (mirror images are beyond the fingerprint's reach).
    overlap = report["training_overlap"]
    assert overlap["matched"] == 10
    assert overlap["checked"] == 11
    assert overlap["unchecked"] == 0
    assert {case["name"].rsplit("/", 1)[-1] for case in overlap["cases"]} == {p.name for p in XRAYS + ORIGINALS}
    assert report["verdict"] == "insufficient"
    assert "adopt-form" not in page
    assert "10 of 11 cases are images the model was trained, calibrated or selected on" in page
    assert "IM-0115-0001.jpeg" in page

    refused = admin_client.post(
        f"/site-validation/{validation.pk}/adopt/", {"target_sensitivity": "0.95"}, follow=True
    ).content.decode()
    assert "10 of 11 cases are images the model was trained" in refused
    assert not SiteSetting.objects.exists()
    assert "Not yet validated at this site" in admin_client.get("/site-validation/").content.decode()


def test_an_adopted_operating_point_sets_every_later_result(
    validation, admin_client, submitter, publish, django_capture_on_commit_callbacks
):
    cases(validation, separated())
    adopted = admin_client.post(
        f"/site-validation/{validation.pk}/adopt/", {"target_sensitivity": "0.95", "prevalence": "0.3"}, follow=True
    ).content.decode()
    setting = SiteSetting.objects.get()
    assert "Adopted for model" in adopted
    assert "Validated at this site" in adopted
    assert setting.threshold == pytest.approx(0.30)

    from screening.intake.submission import submit

    with django_capture_on_commit_callbacks(execute=True):
        outcome = submit(submitter, "api", [(XRAYS[1].name, io.BytesIO(mirrored(XRAYS[1])))])
    run_queue(publish)
    result = Result.objects.get(study=outcome.studies[0])
    assert result.site_setting == setting
    assert result.threshold == setting.threshold
    assert result.label == ("PNEUMONIA" if result.probability >= setting.threshold else "NORMAL")
    assert result.site_probability is not None
    assert result.site_probability < result.probability
    assert Study.objects.get(pk=outcome.studies[0].pk).fingerprint == ""  # clinical films are not fingerprinted


def test_only_administrators_validate_and_adopt(client, submitter, radiologist, auditor, validation):
    cases(validation, separated())
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
    assert site_validation._defined({"ci": [float("nan"), 0.5]}) == {"ci": [None, 0.5]}


def test_the_command_refuses_adoption_in_plain_words(admin_user, validation):
    cases(validation, separated(40, 40))
    with pytest.raises(CommandError, match="Not adopted: .*60 more pneumonia and 60 more normal cases are needed"):
        call_command("site_validation", "--adopt", str(validation.pk), "--user", admin_user.username)
    assert not SiteSetting.objects.exists()


def test_refusals_are_read_in_the_administrators_language(validation, admin_user):
    from django.utils.translation import override

    cases(validation, separated(20, 20), fingerprints=training_fingerprints("NORMAL", 20))
    site_validation.refresh(validation)
    with override("es"), pytest.raises(site_validation.AdoptionRefused) as spanish:
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)
    assert "20 de 40 casos son imágenes con las que el modelo se entrenó" in str(spanish.value)
    with override("zh-hans"), pytest.raises(site_validation.AdoptionRefused) as chinese:
        site_validation.adopt(validation, admin_user, target_sensitivity=0.95, prevalence=None)
    assert "40 个病例中有 20 个是模型训练" in str(chinese.value)
    assert "20 of 40 cases are images" in validation.report["message"]  # stored in English


def test_the_report_breaks_figures_down_by_subgroup_where_the_cases_say(validation):
    cases(validation, separated())
    studies = Study.objects.filter(pk__in=validation.cases.values("study_id")).order_by("pk")
    for i, study in enumerate(studies):
        study.view_position = "PA" if i % 2 else "AP"
        study.patient_sex = "F" if i < 100 else ""
        study.patient_age = "004Y" if i % 3 else "030Y"
        study.save()
    report = site_validation.refresh(validation).report
    groups = {dimension: {row["group"]: row for row in rows} for dimension, rows in report["subgroups"].items()}
    assert set(groups) == {"age_band", "view", "sex"}  # no manufacturer or source folder in these cases
    assert set(groups["view"]) == {"AP", "PA"}
    assert groups["view"]["AP"]["n_pneumonia"] == 50
    assert groups["sex"]["F"]["n_normal"] == 100
    assert groups["sex"]["unknown"]["n_pneumonia"] == 100
    assert "auc" not in groups["sex"]["F"]  # one class only: no AUC
    assert set(groups["age_band"]) == {"1–5 y", "18–64 y"}
    assert groups["age_band"]["1–5 y"]["auc"] == 1.0
    assert groups["age_band"]["18–64 y"]["ci"]["sensitivity"] == list(
        clopper_pearson(groups["age_band"]["18–64 y"]["confusion"]["tp"], groups["age_band"]["18–64 y"]["n_pneumonia"])
    )


def test_the_source_folder_is_the_one_above_the_label():
    study = Study(original_name="site.zip/ward-3/PNEUMONIA/a.jpeg")
    assert site_validation._source_folder(study) == "ward-3"
    assert site_validation._source_folder(Study(original_name="NORMAL/a.jpeg")) == "unknown"


def test_the_report_prints_as_a_pdf_to_sign_and_the_print_is_audited(validation, admin_client, auditor):
    cases(validation, separated())
    Study.objects.filter(pk__in=validation.cases.values("study_id")).update(view_position="AP", manufacturer="Acme")
    response = logged_in(auditor).get(f"/site-validation/{validation.pk}/report.pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert b"/Count 3" in response.content
    assert f"(Site validation {validation.pk} of model v5)".encode() in response.content  # the PDF's title
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT)
    assert event.details["what"] == "site_validation_pdf"
    assert event.actor == auditor
    page = admin_client.get(f"/site-validation/{validation.pk}/").content.decode()
    assert 'id="site-pdf"' in page
    assert 'id="site-subgroups"' in page
    assert "Acme" in page


def test_a_running_validation_has_no_pdf(validation, admin_client):
    cases(validation, separated(5, 5))
    Study.objects.filter(pk=validation.cases.first().study_id).update(status=Study.Status.QUEUED)
    assert admin_client.get(f"/site-validation/{validation.pk}/report.pdf").status_code == 404
