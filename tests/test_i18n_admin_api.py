"""The admin's field and model names, the JSON API's errors and site reports in the reader's language (issue 16).

The admin is where auditors read the evidence, and the API is what a
hospital's scripts and the upload page read; both answered in English only.
"""

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client
from django.utils.functional import Promise
from django.utils.translation import override

from screening.governance import site_validation
from screening.models import Result, SiteValidation, SiteValidationCase
from tests.conftest import XRAYS, named, token_client
from tests.factories import batch_for, scored_study

CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9"}
SPANISH = {"HTTP_ACCEPT_LANGUAGE": "es-ES,es;q=0.9"}


def screening_fields():
    for model in apps.get_app_config("screening").get_models():
        for field in model._meta.get_fields():
            if field.concrete and not field.auto_created:
                yield model, field


@pytest.mark.parametrize("model", list(apps.get_app_config("screening").get_models()), ids=lambda m: m.__name__)
def test_every_model_and_field_name_is_marked_for_translation(model):
    """A name Django derives from the attribute (``sop_instance_uid``) can never be translated."""
    names = [model._meta.verbose_name, model._meta.verbose_name_plural, apps.get_app_config("screening").verbose_name]
    names += [field.verbose_name for m, field in screening_fields() if m is model]
    unmarked = [str(name) for name in names if not isinstance(name, Promise)]
    assert not unmarked


def test_every_field_name_has_a_chinese_and_a_spanish_translation():
    for language in ("zh-hans", "es"):
        with override(language):
            untranslated = [
                f"{model.__name__}.{field.name}"
                for model, field in screening_fields()
                if str(field.verbose_name) == field.verbose_name._args[0] and field.verbose_name._args[0] != "SHA-256"
            ]
        assert not untranslated, language


@pytest.fixture
def admin_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw"))
    return client


def test_the_admin_reads_in_chinese_and_spanish(admin_client, submitter):
    study = scored_study(batch_for(submitter), 0.91)
    index = admin_client.get("/admin/", **CHINESE).content.decode()
    assert "筛查" in index
    assert "模型结果" in index
    assert "审计事件" in index
    assert "接收的 DICOM 实例" in index
    studies = admin_client.get("/admin/screening/study/", **CHINESE).content.decode()
    assert "原始文件名" in studies
    assert "审阅状态" in studies
    assert "人群" in studies
    assert "肺炎" in studies, "the model label's filter shows its choices translated"
    assert "0,910" in admin_client.get("/admin/screening/study/", **SPANISH).content.decode(), "scores in three places"
    change = admin_client.get(f"/admin/screening/study/{study.pk}/change/", **SPANISH).content.decode()
    assert "Nombre de archivo original" in change
    assert "UID de instancia SOP" in change
    assert "Probabilidad viral" in change, "the inline of model results has its columns translated"
    assert f"Estudio {study.pk}" in change, "the study's own name too"
    assert "登录锁定" in index, "django-axes's admin block, translated by our catalogue"
    assert "访问尝试" in index, "django-axes's admin block, translated by our catalogue"
    english = admin_client.get("/admin/screening/study/").content.decode()
    assert "Original file name" in english
    assert "Pneumonia screening — administration" in english


def test_every_string_django_axes_marks_is_in_our_catalogue():
    """django-axes ships no zh-Hans or es catalogue: ours translates what it marks (an upgrade may add more)."""
    import re
    from pathlib import Path

    import axes

    from webapp.third_party_strings import AXES

    folder = Path(axes.__file__).parent
    marked = set()
    for name in ("models.py", "admin.py"):
        marked |= set(re.findall(r'\b_\("([^"]+)"\)', (folder / name).read_text()))
    assert marked - {"Yes", "No"} <= set(AXES), "Django itself translates Yes and No"


def test_api_errors_carry_a_stable_code_and_a_sentence_in_the_callers_language(submitter):
    client = token_client(submitter)
    missing = client.get("/api/v1/batches/999999", **CHINESE)
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "error": "未找到。"}
    english = client.get("/api/v1/batches/999999")
    assert english.json() == {"code": "not_found", "error": "Not found."}, "English without Accept-Language"

    anonymous = Client().get("/api/v1/batches/1", **SPANISH)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "authentication_required"
    assert anonymous.json()["error"].startswith("Se requiere autenticación")

    no_file = client.post("/api/v1/studies", {}, **SPANISH)
    assert no_file.status_code == 400
    assert no_file.json()["code"] == "missing_file"
    assert "exactamente un archivo" in no_file.json()["error"]

    bad_age = client.post("/api/v1/studies", {"file": named("a.jpeg", XRAYS[0].read_bytes()), "age": "old"}, **CHINESE)
    assert bad_age.json() == {"code": "invalid_declaration", "error": "申报年龄 'old' 不是以岁为单位的数字。"}
    bad_group = client.post("/api/v1/studies", {"file": named("a.jpeg", b"x"), "population": "cats"}, **SPANISH)
    assert bad_group.json()["error"] == "La población declarada 'cats' no es una de: pediatric, adult."


def test_refused_files_are_explained_in_the_callers_language_and_stored_in_english(submitter):
    client = token_client(submitter)
    response = client.post("/api/v1/batches", {"files": [named("notes.jpeg", b"plain text, not an image")]}, **CHINESE)
    body = response.json()
    assert response.status_code == 400
    assert body["code"] == "nothing_accepted"
    assert body["error"] == "没有可接受的文件。"
    reason = "不是 JPEG、PNG 或 DICOM 文件（依据文件内容而非文件名判断）。"
    assert body["refused"] == [{"file": "notes.jpeg", "error": reason}]

    accepted = client.post(
        "/api/v1/batches", {"files": [named("x.jpeg", XRAYS[0].read_bytes()), named("y.txt", b"text")]}, **SPANISH
    ).json()
    assert accepted["refused"][0]["error"].startswith("No es un archivo JPEG, PNG ni DICOM")
    batch = client.get(f"/api/v1/batches/{accepted['batch']}", **SPANISH).json()
    assert batch["upload_report"][0]["error"].startswith("No es un archivo JPEG, PNG ni DICOM")
    from screening.models import Batch

    stored = Batch.objects.get(pk=accepted["batch"]).upload_report
    assert stored[0]["error"].startswith("Not a JPEG, PNG or DICOM file"), "the database keeps English"


def test_a_studys_stored_reason_reads_in_the_callers_language(submitter):
    study = scored_study(batch_for(submitter), 0.2)
    study.status, study.status_message = study.Status.FAILED, "The file is empty."
    study.population_reason = "patient age 3 y; the model is validated for ages 1–5"
    study.save()
    body = token_client(submitter).get(f"/api/v1/studies/{study.pk}", **CHINESE).json()
    assert body["error"] != "The file is empty."
    assert "空" in body["error"]
    assert body["population_reason"].startswith("患者年龄 3")
    assert token_client(submitter).get(f"/api/v1/studies/{study.pk}").json()["error"] == "The file is empty."


def test_a_site_report_is_stored_in_english_and_read_in_the_readers_language(admin_client, db):
    from screening.served_model import current_model_version

    admin = User.objects.get(username="root")
    validation = SiteValidation.objects.create(
        created_by=admin, source=SiteValidation.Source.LABELLED_FILES, model_version=current_model_version()
    )
    batch = batch_for(admin)
    for probability, pneumonia in [(0.9, False), (0.2, True), (0.7, False), (0.4, True)] * 3:
        study = scored_study(batch, probability)
        Result.objects.filter(study=study).update(model_version=validation.model_version)
        SiteValidationCase.objects.create(validation=validation, study=study, pneumonia=pneumonia)
    report = site_validation.refresh(validation).report
    assert "we recommend not relying on it here" in report["message"]
    page = admin_client.get(f"/site-validation/{validation.pk}/", **SPANISH).content.decode()
    assert "recomendamos no confiar en él aquí" in page
    assert "we recommend" not in page
    listing = admin_client.get("/site-validation/", **CHINESE).content.decode()
    assert "（在本院不可靠）" in listing or "(在本院不可靠)" in listing
    with override("es"), pytest.raises(site_validation.AdoptionRefused, match="recomendamos no confiar"):
        site_validation.adopt(validation, admin, target_sensitivity=0.95, prevalence=None)
