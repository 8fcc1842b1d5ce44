"""Heatmap overlays are drawn when a study is first viewed, from the map stored with its result."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ml.serving.heatmap import overlay_png
from screening.models import Result
from tests.conftest import logged_in
from tests.factories import batch_for, scored_study


def test_the_overlay_is_drawn_from_the_stored_map_on_first_view_and_then_served_from_disk(
    submitter, radiologist, settings
):
    study = scored_study(batch_for(submitter), 0.9, image_width=640, image_height=480)
    raw = np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7).round(3)
    Result.objects.filter(study=study).update(heatmap_raw=raw.tolist(), salient_box=[0.5, 0.5, 0.9, 0.9])
    cached = settings.MEDIA_ROOT / "heatmaps" / "v-test" / study.sha256[:2] / f"{study.sha256}.png"
    assert not cached.exists()

    first = logged_in(radiologist).get(f"/studies/{study.pk}/heatmap.png")
    assert first.status_code == 200
    assert first["Content-Type"] == "image/png"
    body = b"".join(first.streaming_content)
    assert body == overlay_png(raw, 640, 480, (0.5, 0.5, 0.9, 0.9))  # what the worker used to store
    assert Image.open(io.BytesIO(body)).mode == "RGBA"
    assert cached.exists()

    cached.write_bytes(b"cached")  # the second view reads the file, it does not draw again
    second = logged_in(radiologist).get(f"/studies/{study.pk}/heatmap.png")
    assert b"".join(second.streaming_content) == b"cached"
    page = logged_in(radiologist).get(f"/studies/{study.pk}/").content.decode()
    assert 'id="heatmap-toggle"' in page


def test_a_result_without_a_map_has_no_heatmap(submitter, radiologist):
    study = scored_study(batch_for(submitter), 0.2)
    assert logged_in(radiologist).get(f"/studies/{study.pk}/heatmap.png").status_code == 404
    assert 'id="heatmap-toggle"' not in logged_in(radiologist).get(f"/studies/{study.pk}/").content.decode()


def test_an_overlay_stored_by_an_earlier_worker_is_still_served(submitter, radiologist, settings):
    study = scored_study(batch_for(submitter), 0.7, media_root=settings.MEDIA_ROOT)
    response = logged_in(radiologist).get(f"/studies/{study.pk}/heatmap.png")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(b"".join(response.streaming_content))).size == (32, 24)


def test_the_study_page_says_how_much_evidence_lay_outside_the_lungs(submitter, radiologist):
    mostly_lung = scored_study(batch_for(submitter), 0.9)
    mostly_elsewhere = scored_study(batch_for(submitter), 0.9)
    low_score = scored_study(batch_for(submitter), 0.1)
    older_model = scored_study(batch_for(submitter), 0.9)
    Result.objects.filter(study=mostly_lung).update(evidence_outside_lungs=0.64)  # usual: half the studies exceed 49 %
    Result.objects.filter(study=mostly_elsewhere).update(evidence_outside_lungs=0.86)
    Result.objects.filter(study=low_score).update(evidence_outside_lungs=0.9)

    def note(study):
        page = logged_in(radiologist).get(f"/studies/{study.pk}/").content.decode()
        if 'id="outside-lungs"' not in page:
            return None
        start = page.index('<p class="hint', page.index('id="outside-lungs"') - 40)
        return page[start : page.index("</p>", start)]

    calm = note(mostly_lung)
    assert "64 % of its evidence lay outside them" in calm
    assert "warning" not in calm
    loud = note(mostly_elsewhere)
    assert "86 %" in loud
    assert "warning" in loud
    assert "Read it with care" in loud
    unflagged = note(low_score)  # a score below the threshold has no positive evidence to doubt
    assert "90 %" in unflagged
    assert "warning" not in unflagged
    assert note(older_model) is None  # models without a lung-field head say nothing
