"""The bad-input corpus through the whole service: upload layer, then the worker.

Every file in tests/fixtures/bad/ ends as EXPECTED.csv says: refused at
upload (no study row), FAILED or REJECTED with a message, or DONE with the
same score as the plain 8-bit version. They are scored together in one chunk,
so this also shows one bad file never stops the rest.
"""

import csv
import io
from pathlib import Path

import pytest

from screening.intake.submission import submit
from screening.models import Batch, Study
from worker.scoring import score_chunk

CORPUS = Path(__file__).parent / "fixtures" / "bad"
ROWS = [row for row in csv.DictReader((CORPUS / "EXPECTED.csv").open()) if (CORPUS / row["file"]).exists()]


@pytest.fixture
def screener(served_explainer):
    return served_explainer


@pytest.fixture
def outcomes(submitter, screener, publish):
    outcome = submit(
        submitter, Batch.Source.API, [(row["file"], io.BytesIO((CORPUS / row["file"]).read_bytes())) for row in ROWS]
    )
    from worker.loaded_models import get_gate

    summary = score_chunk([s.pk for s in outcome.studies], screener, get_gate())
    assert len(summary.claimed) == len(outcome.studies)
    studies = {s.original_name: s for s in Study.objects.filter(batch=outcome.batch).prefetch_related("results")}
    refused = {r.name: r.error for r in outcome.refusals}
    return studies, refused


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_corpus_file_ends_as_expected(outcomes, row):
    studies, refused = outcomes
    name, expected = row["file"], row["expected"]
    if expected == "refused_at_upload":
        assert name in refused
        assert name not in studies
        return
    study = studies[name]
    if expected in ("FAILED", "REJECTED"):
        assert study.status == expected, (study.status, study.status_message)
        assert study.status_message
        assert "Traceback" not in study.status_message
        assert not study.results.exists()
        return
    assert study.status == Study.Status.DONE, study.status_message
    if expected == "DONE_same_as_plain":
        plain = studies[row["same_as"]]
        assert abs(study.results.get().probability - plain.results.get().probability) <= 0.01
