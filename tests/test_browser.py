"""The three everyday journeys, in a real browser (Playwright driving Debian's Chromium).

A submitter uploads a 5-image batch and watches it reach 100 %; a
radiologist works the worklist with the keyboard and reviews two studies; an
auditor finds both reviews in the audit trail. Screenshots of each main page
go to ``test-artifacts/``. Skipped, loudly, where no Chromium is installed
(``make test`` installs it when it runs as root).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from harness.worker_process import ROOT, WorkerProcess, postgres_worker_env
from screening.models import AuditEvent, Review, Study
from tests.conftest import CHROMIUM, ORIGINALS, XRAYS

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.worker,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM}: browser tests skipped (run `make test` as root to install it)",
    ),
]


@pytest.fixture
def page(browser):
    # The test's own probes (wait_for_function, eval_on_selector) are evaluated
    # JavaScript, which the site's Content-Security-Policy forbids; the policy
    # itself is checked, without this bypass, by test_pages_break_no_content_security_rule.
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"pw-{username}")
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture
def worker(live_server, settings, tmp_path):
    if not getattr(django_settings, "USING_REAL_SERVICES", False):
        pytest.skip("PostgreSQL/Redis not reachable here (CI=true refuses this fallback)")
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    process = WorkerProcess(postgres_worker_env(settings), tmp_path / "worker.log").start()
    yield process
    process.stop()


@pytest.mark.django_db(transaction=True)
def test_submit_review_and_audit_in_a_browser(page, live_server, worker, submitter, radiologist, auditor, tmp_path):
    base = live_server.url
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for source in XRAYS[:4] + ORIGINALS[:1]:
        shutil.copy(source, uploads / source.name)

    # A submitter uploads five files and watches processing reach 100 %.
    log_in(page, base, "sam")
    page.goto(f"{base}/batches/new/")
    page.set_input_files("input[type=file]", sorted(str(p) for p in uploads.iterdir()))
    shot(page, "01-upload-chosen")
    page.click("#submit-button")
    page.wait_for_selector("#upload-done:not([hidden])")
    page.wait_for_function(
        "document.getElementById('processing-progress').max == 5 && "
        "document.getElementById('processing-progress').value == 5",
        timeout=180_000,
    )
    assert "5 / 5" in page.inner_text("#processing-text")
    shot(page, "02-upload-finished")
    page.click("#batch-link")
    page.wait_for_selector("table")
    shot(page, "03-batch-detail")
    assert Study.objects.filter(status=Study.Status.DONE).count() == 5

    # A radiologist works the worklist with the keyboard and reviews two studies.
    page.context.clear_cookies()
    log_in(page, base, "rita")
    page.goto(f"{base}/worklist/")
    shot(page, "04-worklist")
    ordered = [
        int(x)
        for x in page.eval_on_selector_all(
            "#worklist tbody tr[data-href] td:first-child a", "els => els.map(e => e.textContent)"
        )
    ]
    scores = [Study.objects.get(pk=pk).score for pk in ordered]
    assert scores == sorted(scores, reverse=True)
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/studies/{ordered[1]}/")
    page.wait_for_selector("#xray")
    assert page.eval_on_selector("#xray", "img => img.naturalWidth") > 0
    page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0")
    # The overlay starts on only above the threshold; h and the checkbox toggle it.
    above = Study.objects.get(pk=ordered[1]).model_label == "PNEUMONIA"
    assert page.is_visible("#heatmap") == above
    if not above:
        page.keyboard.press("h")
    shot(page, "05-study")
    assert page.is_visible("#heatmap")
    page.keyboard.press("h")
    assert not page.is_visible("#heatmap")
    shot(page, "05b-study-heatmap-off")
    page.click("#heatmap-toggle")
    assert page.is_visible("#heatmap")
    page.check("input[name=agrees_with_model][value=yes]")
    page.check("input[name=finding][value=pneumonia]")
    page.fill("textarea[name=comment]", "Consolidation, right lower lobe.")
    page.click("#review-form button[type=submit]")
    page.wait_for_url(f"**/studies/{ordered[0]}/")
    page.check("input[name=agrees_with_model][value=no]")
    page.check("input[name=finding][value=normal]")
    page.click("#review-form button[type=submit]")
    page.wait_for_load_state()
    assert Review.objects.count() == 2

    # An auditor finds both reviews in the audit trail.
    page.context.clear_cookies()
    log_in(page, base, "abe")
    page.goto(f"{base}/admin/screening/auditevent/?action__exact=review_saved")
    shot(page, "06-audit-trail")
    assert page.locator("#result_list tbody tr").count() == 2
    assert AuditEvent.objects.filter(action="review_saved", actor=radiologist).count() == 2


@pytest.mark.django_db(transaction=True)
def test_outside_lane_and_site_validation_in_a_browser(page, live_server, worker, submitter, radiologist, tmp_path):
    """Adults go to their own lane; an administrator validates the site and adopts its operating point."""
    from django.contrib.auth.models import User

    from tests.test_site_validation import labelled_zip

    base = live_server.url
    User.objects.create_superuser("ada", password="pw-ada")
    adults = sorted((ROOT / "tests" / "fixtures" / "adult").glob("*.jpeg"))

    # A submitter uploads two adult films and two children's without saying who the patients are.
    log_in(page, base, "sam")
    page.goto(f"{base}/batches/new/")
    page.set_input_files("input[type=file]", [str(p) for p in adults + XRAYS[:2]])
    page.click("#submit-button")
    page.wait_for_function("document.getElementById('processing-progress').value == 4", timeout=180_000)

    # The radiologist's main lane holds the children only; the adults wait in their own tab.
    page.context.clear_cookies()
    log_in(page, base, "rita")
    page.goto(f"{base}/worklist/")
    main_lane = page.inner_text("#worklist tbody")
    assert "not validated" not in main_lane
    assert page.locator("#worklist tbody tr[data-href]").count() == 2
    page.click("a[data-tab=outside]")
    page.wait_for_selector("#outside-warning")
    shot(page, "07-worklist-outside")
    rows = page.locator("#worklist tbody tr.outside-population")
    assert rows.count() == 2
    assert page.locator("#worklist tr.flagged").count() == 0
    assert "looks like an adult" in page.inner_text("#worklist tbody")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_selector("#population-outside")
    page.wait_for_function("document.getElementById('xray').naturalWidth > 0")
    assert "not validated for this patient" in page.inner_text(".facts")
    shot(page, "08-study-outside")

    # An administrator validates the site on labelled files and adopts an operating point.
    archive = tmp_path / "site.zip"
    archive.write_bytes(labelled_zip())
    page.context.clear_cookies()
    log_in(page, base, "ada")
    page.goto(f"{base}/site-validation/")
    assert "Not yet validated at this site" in page.inner_text("#site-status")
    page.set_input_files("input[name=archive]", str(archive))
    page.click("#site-validation-form button[type=submit]")
    page.wait_for_selector("#site-progress")
    for _ in range(90):
        if page.locator("#site-report").count():
            break
        page.wait_for_timeout(2000)
        page.reload()
    # The fixtures are the model's own training films: the report names them and refuses adoption.
    assert page.get_attribute("#site-report", "data-verdict") == "insufficient"
    assert "are images the model was trained, calibrated or selected on" in page.inner_text("#site-verdict")
    assert page.locator("#adopt-form").count() == 0
    shot(page, "09-site-report-refused")

    # A validation on enough films the model never saw (factory results) can be adopted.
    from screening.models import SiteValidation
    from screening.served_model import current_model_version
    from tests.test_site_validation import cases, separated

    independent = SiteValidation.objects.create(
        created_by=User.objects.get(username="ada"),
        source=SiteValidation.Source.LABELLED_FILES,
        model_version=current_model_version(),
    )
    cases(independent, separated())
    page.goto(f"{base}/site-validation/{independent.pk}/")
    assert page.get_attribute("#site-report", "data-verdict") == "adoptable"
    assert page.locator("#roc").count() == 1
    assert page.locator("circle.calibration").count() > 0
    assert page.locator("#site-operating-points tr").count() == 5
    shot(page, "09-site-report")
    page.fill("input[name=target_sensitivity]", "0.95")
    page.click("#adopt-form button[type=submit]")
    page.wait_for_selector("#site-status.site-validated")
    shot(page, "10-site-adopted")
    assert "Validated at this site" in page.inner_text("#site-status")


@pytest.mark.django_db(transaction=True)
def test_pages_break_no_content_security_rule(browser, live_server, submitter, radiologist, settings):
    """With the policy enforced, no page of the journeys above logs a CSP violation."""
    from django.contrib.auth.models import User

    from tests.factories import batch_for, scored_study

    User.objects.create_superuser("ada", password="pw-ada")
    study = scored_study(batch_for(submitter), 0.9, media_root=settings.MEDIA_ROOT)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    violations = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    base = live_server.url
    for user, paths in [
        ("sam", ["/batches/new/", "/batches/"]),
        ("rita", ["/worklist/", f"/studies/{study.pk}/"]),
        (
            "ada",
            [
                "/site-validation/",
                "/system/",
                "/admin/",
                "/admin/screening/study/",
                f"/admin/screening/study/{study.pk}/change/",
            ],
        ),
    ]:
        context.clear_cookies()
        log_in(page, base, user)
        for path in paths:
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
    context.close()
    assert violations == []


@pytest.mark.django_db(transaction=True)
def test_a_radiologist_works_the_worklist_in_chinese(page, live_server, submitter, radiologist, settings):
    """Chosen in the header, the language holds across pages; the keyboard journey and the review work in it."""
    from tests.factories import batch_for, scored_study

    batch = batch_for(submitter)
    high, low = (scored_study(batch, p, media_root=settings.MEDIA_ROOT) for p in (0.93, 0.41))
    base = live_server.url
    log_in(page, base, "rita")
    page.select_option("#language", "zh-hans")
    page.click("#language-form button[type=submit]")
    page.wait_for_load_state()
    page.goto(f"{base}/worklist/")
    assert page.inner_text("h1") == "工作列表"
    assert "辅助决策" in page.inner_text(".intended-use")
    assert page.eval_on_selector("html", "html => html.lang") == "zh-hans"
    shot(page, "07-worklist-zh")
    page.keyboard.press("j")  # to the second study and back: the highest score first
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/studies/{high.pk}/")
    assert "您的审阅" in page.inner_text("#review-form")
    page.check("input[name=agrees_with_model][value=yes]")
    page.check("input[name=finding][value=pneumonia]")
    page.click("#review-form button[type=submit]")
    page.wait_for_url(f"**/studies/{low.pk}/")
    assert f"已保存检查 {high.pk} 的审阅。" in page.inner_text(".messages")
    shot(page, "08-study-zh")
    assert Review.objects.get().study_id == high.pk
