"""Query counts on list pages stay fixed with 1,000 studies present (no N+1)."""

import pytest
from django.test import Client

from tests.conftest import logged_in
from tests.factories import batch_for, bulk_scored_studies


@pytest.fixture
def thousand_studies(submitter):
    batch = batch_for(submitter)
    bulk_scored_studies(batch, 1000)
    return batch


def test_worklist_queries_are_pinned(radiologist, thousand_studies, django_assert_num_queries):
    client = logged_in(radiologist)
    # session, user, 2x permissions, tab counts, page count, page rows, site setting (banner), monitoring
    # alerts (banner), session save (3)
    with django_assert_num_queries(12):
        response = client.get("/worklist/")
    assert response.status_code == 200
    assert len(response.context["page"]) == 50


def test_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    client = logged_in(submitter)
    # session, user, 2x permissions, batch, progress counts, studies, their results, site setting (banner),
    # session save (3)
    with django_assert_num_queries(12):
        response = client.get(f"/batches/{thousand_studies.pk}/")
    assert response.status_code == 200
    assert len(response.context["studies"]) == 1000


def test_api_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    from screening.api import tokens

    client = Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(submitter)}")
    # ... includes two for the token's rate-limit window (count this request, read or start the minute)
    with django_assert_num_queries(9):
        response = client.get(f"/api/v1/batches/{thousand_studies.pk}")
    assert response.status_code == 200
    assert len(response.json()["studies"]) == 1000


def test_scoring_a_chunk_makes_a_fixed_number_of_queries(submitter, publish, django_assert_num_queries):
    """Per chunk, not per study: what each worker adds to PostgreSQL's load when workers scale out."""
    import io

    import numpy as np
    from PIL import Image

    from screening.intake.submission import submit
    from screening.models import Batch
    from tests.conftest import XRAYS
    from worker.loaded_models import get_gate, get_population_check, get_screener
    from worker.scoring import score_chunk

    files = []
    for i in range(16):
        pixels = np.array(Image.open(XRAYS[i % len(XRAYS)]).convert("L"))
        pixels[0, 0] = i
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files.append((f"{i}.png", io.BytesIO(buffer.getvalue())))
    ids = [s.pk for s in submit(submitter, Batch.Source.API, files).studies]
    screener, gate, check = get_screener(), get_gate(), get_population_check()
    # 9 statements in two transactions (here their savepoints count too): claim (select for update,
    # update), read the claimed rows, the site setting, then lock, insert results, update studies twice.
    with django_assert_num_queries(13):
        summary = score_chunk(ids, screener, gate, check, claimant="test:1")
    assert summary.done + summary.rejected == 16
