"""Scoring a chunk with the shipped model: claim, decode, one forward pass, results."""

import io
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from screening.intake import previews
from screening.intake.submission import submit
from screening.models import Batch, Result, Study
from tests.conftest import ORIGINALS, XRAYS
from worker.scoring import claim, score_chunk


@pytest.fixture
def screener(served_explainer):
    return served_explainer


@pytest.fixture(autouse=True)
def no_broker(publish):
    return publish


def submit_files(user, *pairs):
    return submit(user, Batch.Source.API, [(name, io.BytesIO(data)) for name, data in pairs]).studies


def test_it_scores_a_chunk_and_records_the_model_version(submitter, screener, settings):
    studies = submit_files(submitter, *[(p.name, p.read_bytes()) for p in XRAYS + ORIGINALS])
    summary = score_chunk([s.pk for s in studies], screener)
    assert summary.done == len(studies)
    assert summary.failed == summary.rejected == 0
    for study in Study.objects.filter(pk__in=summary.claimed):
        assert study.status == Study.Status.DONE
        assert study.finished_at
        assert study.attempts == 1
        result = study.results.get()
        assert 0.0 <= result.probability <= 1.0
        assert result.model_version == screener.version
        assert result.threshold == screener.threshold
        assert result.label == ("PNEUMONIA" if result.probability >= screener.threshold else "NORMAL")
        assert study.image_width
        assert study.image_height
        assert study.score == result.probability
        assert study.model_label == result.label
        # A raw Grad-CAM map for every scored study, drawn as an overlay on first view; a box only above threshold.
        assert not result.heatmap, "the worker no longer draws overlays"
        overlay = Image.open(previews.heatmap_file(result, study))
        assert overlay.mode == "RGBA"
        assert abs(overlay.width / overlay.height - study.image_width / study.image_height) < 0.02
        raw = np.array(result.heatmap_raw)
        assert raw.ndim == 2
        assert raw.min() >= 0
        assert raw.max() <= 1
        assert (result.salient_box is not None) == (result.label == "PNEUMONIA")
        # The shipped card has a lung-field head: the share of evidence it kept out of the map is recorded.
        assert result.evidence_outside_lungs is not None
        assert 0 <= result.evidence_outside_lungs <= 1


def test_running_the_same_chunk_twice_gives_one_result_each(submitter, screener):
    ids = [s.pk for s in submit_files(submitter, *[(p.name, p.read_bytes()) for p in XRAYS[:3]])]
    first = score_chunk(ids, screener)
    second = score_chunk(ids, screener)
    assert len(first.claimed) == 3
    assert second.claimed == []
    assert Result.objects.filter(study_id__in=ids).count() == 3


def test_a_second_worker_cannot_claim_what_the_first_took(submitter):
    ids = [s.pk for s in submit_files(submitter, *[(p.name, p.read_bytes()) for p in XRAYS[:2]])]
    assert [s.pk for s in claim(ids)] == ids
    assert claim(ids) == []


def test_one_bad_file_fails_only_its_own_study(submitter, screener):
    good = XRAYS[0].read_bytes()
    truncated = ORIGINALS[0].read_bytes()[:5000]
    studies = submit_files(submitter, ("good.jpeg", good), ("truncated.jpeg", truncated))
    summary = score_chunk([s.pk for s in studies], screener)
    assert summary.done == 1
    assert summary.failed == 1
    bad = Study.objects.get(original_name="truncated.jpeg")
    assert bad.status == Study.Status.FAILED
    assert bad.status_message
    assert not bad.results.exists()
    assert "Traceback" not in bad.status_message


def test_a_missing_stored_file_fails_with_a_clear_message(submitter, screener, settings):
    study = submit_files(submitter, ("gone.jpeg", XRAYS[0].read_bytes()))[0]
    (settings.MEDIA_ROOT / study.file.name).unlink()
    score_chunk([study.pk], screener)
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert study.status_message


def test_an_unexpected_model_error_fails_the_chunk_with_its_message(submitter, screener):
    studies = submit_files(submitter, *[(p.name, p.read_bytes()) for p in XRAYS[:2]])
    with mock.patch.object(type(screener), "explain", side_effect=RuntimeError("boom")):
        summary = score_chunk([s.pk for s in studies], screener)
    assert summary.failed == 2
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.FAILED}


def test_scores_depend_on_the_image(screener):
    from ml.serving.decode import decode
    from ml.serving.preprocess import squash_to_input

    images = np.stack([squash_to_input(decode(p).pixels) for p in XRAYS])
    probabilities = [p.probability for p in screener.screener.predict(images)]
    assert len(set(round(p, 6) for p in probabilities)) > 1


def test_the_gate_rejects_what_is_not_a_chest_xray_before_the_model(submitter, screener):
    from worker.loaded_models import get_gate

    rng = np.random.default_rng(0)
    noise, photo = io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (300, 400), dtype=np.uint8)).save(noise, format="PNG")
    yy, xx = np.mgrid[0:300, 0:400]
    colour = np.dstack([xx * 255 // 400, yy * 255 // 300, 255 - xx * 255 // 400]).astype(np.uint8)
    Image.fromarray(colour).save(photo, format="JPEG")
    studies = submit_files(
        submitter,
        ("noise.png", noise.getvalue()),
        ("colour.jpeg", photo.getvalue()),
        *[(p.name, p.read_bytes()) for p in XRAYS[:3]],
    )
    summary = score_chunk([s.pk for s in studies], screener, get_gate())
    assert summary.done == 3
    assert summary.rejected == 2
    for name in ("noise.png", "colour.jpeg"):
        study = Study.objects.get(original_name=name)
        assert study.status == Study.Status.REJECTED
        assert study.status_message
        assert not study.results.exists()


def test_the_chunks_study_columns_are_written_row_by_row_in_one_statement(submitter, django_assert_num_queries):
    import datetime

    from screening.models import DICOM_COLUMNS
    from tests.factories import batch_for, scored_study
    from worker.scoring import _PER_STUDY_FIELDS, _update_columns

    batch = batch_for(submitter)
    studies = [scored_study(batch, p) for p in (0.1, 0.5, 0.9)]
    values = [
        (0.25, "NORMAL", 640, 480, "validated", "age 3 y", "1.2.3", datetime.date(2026, 11, 30)),
        (0.75, "PNEUMONIA", 2048, 2500, "outside", "it's an adult's film; \"quoted\"", "", None),
        (None, "", None, None, "", "", "9.8.7", datetime.date(1999, 1, 1)),
    ]
    columns = [*_PER_STUDY_FIELDS, DICOM_COLUMNS["SeriesInstanceUID"], "study_date"]
    for study, row in zip(studies, values, strict=True):
        for column, value in zip(columns, row, strict=True):
            setattr(study, column, value)
    with django_assert_num_queries(1):
        _update_columns(studies, columns)
    for study, row in zip(studies, values, strict=True):
        study.refresh_from_db()
        assert tuple(getattr(study, column) for column in columns) == row
