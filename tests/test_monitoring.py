"""The model watched in use: agreement with the reviewers, score drift, unusual outcomes, alerts and their trail."""

import re
from pathlib import Path

from ml.statistics.intervals import clopper_pearson
from screening.governance import monitoring
from screening.models import AuditEvent, Batch, Result, Review, Study
from tests.conftest import logged_in
from tests.factories import batch_for, scored_study, unscored_study

ROOT = Path(__file__).resolve().parent.parent


def reviewed(batch, reviewer, probability: float, finding: str, **fields) -> Study:
    """A scored study (label PNEUMONIA at >= 0.5) read by ``reviewer`` against its result."""
    study = scored_study(batch, probability, review_status=Study.ReviewStatus.REVIEWED, **fields)
    Review.objects.create(study=study, reviewer=reviewer, finding=finding, result=Result.objects.get(study=study))
    return study


def reference_like(batch, n: int) -> None:
    """``n`` DONE studies whose scores follow the card's reference shares bin by bin."""
    from screening.served_model import model_card

    shares = model_card()["score_reference"]["shares"]
    counts = [round(share * n) for share in shares]
    for i, count in enumerate(counts):
        for _ in range(count):
            scored_study(batch, (i + 0.5) / 10)


def test_agreement_counts_the_latest_read_of_each_clinical_validated_study(submitter, radiologist):
    batch = batch_for(submitter)
    for _ in range(18):
        reviewed(batch, radiologist, 0.9, Review.Finding.PNEUMONIA)  # true positives
    for _ in range(2):
        reviewed(batch, radiologist, 0.2, Review.Finding.PNEUMONIA)  # missed
    for _ in range(9):
        reviewed(batch, radiologist, 0.1, Review.Finding.NORMAL)
    changed = reviewed(batch, radiologist, 0.8, Review.Finding.PNEUMONIA)
    Review.objects.create(
        study=changed, reviewer=radiologist, finding=Review.Finding.NORMAL, result=changed.results.get()
    )
    # Neither a site-validation film nor an "outside" study is a claim of the model's: not counted.
    reviewed(batch_for(submitter, kind=Batch.Kind.VALIDATION), radiologist, 0.1, Review.Finding.PNEUMONIA)
    reviewed(batch, radiologist, 0.1, Review.Finding.PNEUMONIA, population=Study.Population.OUTSIDE)
    reviewed(batch, radiologist, 0.9, Review.Finding.OTHER)

    report = monitoring.compute()
    sensitivity, specificity, ppv = (report.figures[k] for k in ("sensitivity", "specificity", "ppv"))
    assert (sensitivity.value, sensitivity.n) == (0.9, 20)
    assert sensitivity.ci == clopper_pearson(18, 20)
    assert (specificity.value, specificity.n) == (0.9, 10)  # the changed read: NORMAL, against a PNEUMONIA label
    assert (ppv.value, ppv.n) == (18 / 19, 19)
    assert report.monthly[-1]["n"] == 30


def test_psi_is_nought_for_the_reference_and_large_for_another_distribution():
    reference = [0.5, 0.0, 0.0, 0.5]
    assert monitoring.psi(reference, reference) == 0.0
    assert monitoring.psi([0.25, 0.25, 0.25, 0.25], reference) > 1.0


def test_provoked_drift_raises_one_audited_alert_shown_on_the_worklist_and_system_page(
    submitter, radiologist, admin_client, settings
):
    settings.MONITORING_WINDOW = 60
    batch = batch_for(submitter)
    reference_like(batch, 60)
    report = monitoring.check()
    assert report.figures["score_psi"].value < 0.05
    assert monitoring.current_alerts() == []

    # Scores of another population (adult films, say, declared as children): mid-range, not bimodal.
    for i in range(60):
        scored_study(batch, 0.3 + 0.4 * i / 59)
    report = monitoring.check()
    assert report.figures["score_psi"].value > settings.MONITORING_MAX_PSI
    assert monitoring.current_alerts() == ["score_psi"]
    monitoring.check()  # still out of band: no second event
    event = AuditEvent.objects.get(action=AuditEvent.Action.MONITORING_ALERT)
    assert event.details["figure"] == "score_psi"
    assert event.details["n"] == 60

    worklist = logged_in(radiologist).get("/worklist/").content.decode()
    assert 'id="monitoring-banner"' in worklist
    assert "Score drift (PSI)" in worklist
    assert 'id="monitoring-banner"' in admin_client.get("/system/").content.decode()
    page = admin_client.get("/monitoring/").content.decode()
    assert 'data-figure="score_psi" data-out="1"' in page
    assert 'class="recent-bar"' in page

    reference_like(batch, 60)  # the latest 60 look like the reference again
    assert monitoring.check().figures["score_psi"].value < settings.MONITORING_MAX_PSI
    assert monitoring.current_alerts() == []
    assert AuditEvent.objects.filter(action=AuditEvent.Action.MONITORING_CLEARED).count() == 1
    assert 'id="monitoring-banner"' not in logged_in(radiologist).get("/worklist/").content.decode()


def test_outcome_shares_need_enough_cases_before_they_alert(submitter, settings):
    settings.MONITORING_MIN_CASES = 30
    batch = batch_for(submitter)
    for _ in range(5):
        unscored_study(batch, Study.Status.FAILED)
    figure = monitoring.compute().figures["failed_share"]
    assert figure.value == 1.0
    assert figure.n == 5
    assert not figure.out_of_band
    for _ in range(25):
        scored_study(batch, 0.9, population=Study.Population.OUTSIDE)
    figures = monitoring.compute().figures
    assert figures["failed_share"].out_of_band
    assert figures["failed_share"].n == 30
    assert figures["outside_share"].value == 1.0
    assert not figures["outside_share"].out_of_band
    assert figures["rejected_share"].value == 0.0


def test_metrics_expose_each_figure_and_the_shipped_alert_rules_use_only_those(submitter, admin_client):
    batch = batch_for(submitter)
    for i in range(40):
        scored_study(batch, 0.3 + 0.01 * i)
    text = admin_client.get("/metrics").content.decode()
    assert 'screening_monitoring_out_of_band{figure="score_psi"} 1.0' in text
    assert 'screening_monitoring_band_high{figure="score_psi"} 0.25' in text
    rules = (ROOT / "webapp" / "deploy" / "prometheus-alerts.yml").read_text()
    used = set(re.findall(r"\b(screening_[a-z_]+)\{", rules)) | set(re.findall(r"\b(screening_[a-z_]+) ", rules))
    assert used
    assert all(f"# TYPE {name} " in text for name in used), used


def test_only_staff_see_the_monitoring_page(client, submitter, radiologist):
    assert logged_in(radiologist).get("/monitoring/").status_code == 302
    assert logged_in(submitter).get("/monitoring/").status_code == 302


def test_an_adopted_validation_is_the_drift_reference(admin_user):
    from ml.statistics.metrics import shares
    from screening.governance import site_validation
    from screening.models import SiteValidation
    from screening.served_model import current_model_version
    from tests.test_site_validation import cases, separated

    validation = SiteValidation.objects.create(
        created_by=admin_user, source=SiteValidation.Source.LABELLED_FILES, model_version=current_model_version()
    )
    pairs = separated()
    cases(validation, pairs)
    site_validation.adopt(validation, admin_user, target_sensitivity=0.9, prevalence=None)
    reference, what = monitoring.score_reference()
    assert reference == shares([p for p, _ in pairs])
    assert f"site validation {validation.pk}" in what
