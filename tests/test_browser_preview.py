"""The in-browser preview on the submit page (issue 16), in Debian's Chromium, against the server's own path.

Each fixture is chosen on the submit page; the preview beside its name must
be the server's P(pneumonia) within 0.01 (computed here with
``ml.serving.pipeline``, gate and population check included), and a file the
server would refuse, reject or mark outside the validated population must get
no score at all. Preview-only mode must send nothing. Per-file differences and
times go to ``test-artifacts/preview-parity.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from screening.models import Batch, Study
from tests.conftest import CHROMIUM, FIXTURES, ORIGINALS, XRAYS
from tests.test_browser import ARTIFACTS, log_in, shot

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "webapp" / "static" / "js" / "preview-engine.js"
BAD = sorted(p for p in (FIXTURES / "bad").iterdir() if p.suffix not in (".csv", ".md") and not p.name.startswith("."))
ADULTS = sorted((FIXTURES / "adult").glob("*.jpeg"))
DICOM = FIXTURES / "dicom" / "child_ap.dcm"
TOLERANCE = 0.01

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: browser tests skipped (run `make test` as root to install it)",
)


@pytest.fixture(scope="module")
def server(served_explainer, served_gate, served_population_check):
    """What the worker would make of each file: ``(P, shown)`` or ``(None, why)``, from the production path."""
    from ml.serving import pipeline
    from ml.serving.decode import UnscorableInput

    explainer, gate, check = served_explainer, served_gate, served_population_check

    def judge(path: Path) -> tuple[float | None, str]:
        try:
            prepared = pipeline.prepare(path)
        except UnscorableInput as exc:
            return None, exc.status
        if prepared.format == "dicom":
            return None, "dicom"  # scored by the server, never previewed
        (outcome,) = pipeline.score([prepared], explainer, gate, check)
        if isinstance(outcome, pipeline.Rejected):
            return None, "REJECTED"
        probability = outcome.prediction.probability
        if outcome.adult_probability is not None and outcome.adult_probability >= outcome.adult_threshold:
            return probability, "outside"
        return probability, "scored"

    return judge


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> list[Path]:
    """Encodings the fixtures lack: progressive and restart-marker JPEGs, a PNG with a gamma chunk
    (which a colour-managed decode would apply and the server ignores), a faintly tinted RGB PNG
    (the colour cue is computed, not skipped), and large JPEGs the server decodes at 1/4 scale,
    one of them stored on its side with an EXIF orientation."""
    from PIL import PngImagePlugin

    folder = tmp_path_factory.mktemp("variants")
    plain = Image.open(FIXTURES / "bad" / "plain.png").convert("L")
    plain.save(folder / "progressive.jpeg", quality=90, progressive=True)
    plain.save(folder / "restart_markers.jpeg", quality=90, restart_marker_blocks=4)
    gamma = PngImagePlugin.PngInfo()
    gamma.add(b"gAMA", (100000).to_bytes(4, "big"))  # gamma 1.0: far from a display's
    plain.save(folder / "gamma.png", pnginfo=gamma)
    red, green, blue = (np.asarray(plain, np.int16) for _ in range(3))
    tinted = np.stack([np.clip(red + 3, 0, 255), green, blue], axis=-1).astype(np.uint8)
    Image.fromarray(tinted).save(folder / "tinted_rgb.png")
    large = Image.open(ORIGINALS[0]).convert("L").resize((2300, 1900), Image.Resampling.BICUBIC)
    large.save(folder / "large.jpeg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; shown upright by the server and the browser alike
    large.transpose(Image.Transpose.ROTATE_90).save(folder / "large_exif_rotated.jpeg", quality=92, exif=exif)
    return sorted(folder.iterdir())


def _no_pending(page, selector: str, timeout_s: float = 240) -> None:
    for _ in range(int(timeout_s * 4)):
        if page.locator(f"{selector}[data-status=pending]").count() == 0:
            return
        page.wait_for_timeout(250)
    raise AssertionError("previews still pending")


@pytest.mark.django_db(transaction=True)
def test_previews_match_the_server_and_rejected_files_get_no_score(browser, live_server, submitter, server, variants):
    files = XRAYS + ORIGINALS + ADULTS + BAD + [DICOM] + variants
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # the site's CSP enforced
    page = context.new_page()
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else None)
    log_in(page, live_server.url, "sam")
    page.goto(f"{live_server.url}/batches/new/")
    page.set_input_files("#upload-form input[type=file]", [str(p) for p in files])
    assert page.locator("#chosen .preview").count() == len(files)
    _no_pending(page, "#chosen .preview")
    shot(page, "11-preview-chosen")

    report, failures = [], []
    for path, item in zip(files, page.locator("#chosen .preview").all(), strict=True):
        status, text = item.get_attribute("data-status"), item.inner_text()
        expected, why = server(path)
        name = str(path.relative_to(FIXTURES)) if path.is_relative_to(FIXTURES) else f"variants/{path.name}"
        row = {"file": name, "server": why, "server_p": expected, "preview": status}
        row["ms"] = float(item.get_attribute("data-ms") or "nan")
        if status == "scored":
            shown = float(item.get_attribute("data-probability"))
            row.update(preview_p=shown, delta=None if expected is None else abs(shown - expected))
            if why != "scored" or abs(shown - expected) > TOLERANCE:
                failures.append(row)
            if not text.startswith("Preview: P "):
                failures.append({**row, "text": text})
        else:
            row["reason"] = item.get_attribute("data-reason")
            if not text.startswith("no preview: "):
                failures.append({**row, "text": text})
        report.append(row)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "preview-parity.json").write_text(json.dumps(report, indent=1))
    context.close()

    assert failures == [], failures
    assert violations == []
    # Every 8-bit JPEG/PNG child fixture the server scores is previewed: the test is not vacuous.
    previewed = {row["file"] for row in report if row["preview"] == "scored"}
    for path in XRAYS + ORIGINALS:
        assert str(path.relative_to(FIXTURES)) in previewed
    for name in ("plain.png", "plain.jpeg", "rgba.png", "palette.png", "grey_alpha.png", "exif_rotated.jpeg"):
        assert f"bad/{name}" in previewed
    for name in ("progressive.jpeg", "restart_markers.jpeg", "gamma.png", "tinted_rgb.png"):
        assert f"variants/{name}" in previewed
    # Rejected, failed, adult and DICOM files show no number.
    for row in report:
        if row["server"] != "scored":
            assert row["preview"] == "none", row


@pytest.mark.django_db(transaction=True)
def test_preview_only_mode_sends_nothing_to_the_server(browser, live_server, submitter):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    log_in(page, live_server.url, "sam")
    page.goto(f"{live_server.url}/batches/new/")
    requests = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    page.click("#preview-only summary")
    page.wait_for_selector("#preview-only[data-ready=true]", timeout=60_000)
    page.wait_for_load_state("networkidle")
    # The model's own download is seen (by the worker that scores), so the silence below is real.
    assert any("/static/preview/weights.bin" in r and r.startswith("GET ") for r in requests), requests
    assert page.get_attribute("#preview-only", "data-runs") == "worker"  # off the page's thread

    requests.clear()
    page.set_input_files("#preview-only-file", str(XRAYS[-1]))
    page.wait_for_selector("#preview-only-score[data-status=scored]", timeout=60_000)
    assert page.inner_text("#preview-only-score").startswith("Preview: P ")
    page.set_input_files("#preview-only-file", str(DICOM))
    page.wait_for_selector("#preview-only-score[data-status=none]", timeout=60_000)
    assert "no preview" in page.inner_text("#preview-only-score")
    page.wait_for_timeout(500)
    shot(page, "12-preview-only")
    context.close()

    assert requests == []
    assert Study.objects.count() == 0
    assert Batch.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_preview_follows_the_page_language_and_runs_without_workers(browser, live_server, submitter):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES")
    context.add_init_script("delete window.Worker")  # the same engine then runs on the page's thread
    page = context.new_page()
    context.add_cookies([{"name": "django_language", "value": "es", "url": live_server.url}])
    log_in(page, live_server.url, "sam")
    page.goto(f"{live_server.url}/batches/new/")
    page.set_input_files("#upload-form input[type=file]", [str(XRAYS[0]), str(DICOM)])
    _no_pending(page, "#chosen .preview")
    scored, dicom = page.locator("#chosen .preview").all()
    assert scored.get_attribute("data-status") == "scored"
    assert "," in scored.inner_text()
    assert dicom.get_attribute("data-status") == "none"
    assert "DICOM" in dicom.inner_text()
    assert not dicom.inner_text().startswith("no preview")
    assert page.get_attribute("#preview-only", "data-runs") == "page"
    context.close()


def test_the_js_resize_and_grey_are_pillows(browser):
    """Pillow's bilinear (antialiased when shrinking, uint8 between passes) and its RGB->L, bit for bit."""
    page = browser.new_page()
    page.set_content("<html><body></body></html>")
    page.add_script_tag(path=str(ENGINE))
    rng = np.random.default_rng(16)
    for width, height in [(1506, 833), (763, 440), (224, 500), (300, 224), (100, 80), (225, 223), (1024, 1024)]:
        grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
        grey = np.asarray(Image.fromarray(grey).filter(ImageFilter.SMOOTH))
        expected = np.asarray(Image.fromarray(grey).resize((224, 224), Image.Resampling.BILINEAR))
        got = page.evaluate(
            "([g, w, h]) => Array.from(PneumoPreviewEngine.resizeBilinear(Uint8Array.from(g), w, h, 224, 224))",
            [grey.ravel().tolist(), width, height],
        )
        assert np.array_equal(np.array(got, np.uint8).reshape(224, 224), expected), (width, height)
    rgb = rng.integers(0, 256, (4096, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb.reshape(64, 64, 3)).convert("L")).ravel()
    got = page.evaluate("rgb => rgb.map(p => PneumoPreviewEngine.luma(p[0], p[1], p[2]))", rgb.tolist())
    assert np.array_equal(np.array(got), expected)
    page.close()


def test_the_js_pixel_statistics_are_the_gates(browser):
    from ml.serving.gate import pixel_statistics

    page = browser.new_page()
    page.set_content("<html><body></body></html>")
    page.add_script_tag(path=str(ENGINE))
    rng = np.random.default_rng(4)
    for image in [rng.integers(0, 256, (224, 224), dtype=np.uint8), np.full((224, 224), 7, np.uint8)]:
        expected = pixel_statistics(image[None])
        got = page.evaluate(
            "px => PneumoPreviewEngine.pixelStatistics(Uint8Array.from(px), 224)", image.ravel().tolist()
        )
        assert got["spread"] == expected["spread"][0]
        assert math.isclose(got["roughness"], expected["roughness"][0], rel_tol=1e-9)
    page.close()


def test_the_page_offers_no_preview_when_the_served_model_is_not_the_exported_one(db, settings, tmp_path):
    import json
    import shutil

    from ml.serving.inference import current_model_dir
    from screening.web.browser_preview import page_config

    assert page_config()["enabled"] is True
    other = shutil.copytree(current_model_dir(), tmp_path / "v6")  # the same network, another card: another model
    card = json.loads((other / "card.json").read_text())
    (other / "card.json").write_text(json.dumps({**card, "version": "v6", "threshold": 0.5}))
    settings.SCREENING_MODEL_DIR = str(other)
    assert page_config() == {"enabled": False}


def test_the_preview_follows_the_sites_adopted_operating_point(db):
    """Label at the adopted threshold, number shifted to the adopted prevalence, as the study page shows them."""
    from types import SimpleNamespace
    from unittest import mock

    from ml.serving.calibration import logit
    from screening.served_model import model_card
    from screening.web.browser_preview import page_config

    adopted = SimpleNamespace(threshold=0.5, prevalence=0.3)
    with mock.patch("screening.web.browser_preview.current_site_setting", return_value=adopted):
        config = page_config()
    assert config["threshold"] == 0.5
    expected = logit(0.3) - logit(model_card()["calibration_prevalence"])
    assert math.isclose(config["prevalenceShift"], expected)
    config = page_config()
    assert config["threshold"] == model_card()["threshold"]
    assert config["prevalenceShift"] is None
