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
    # session, user, 2x permissions, tab counts, page count, page rows, site setting (banner), session save (3)
    with django_assert_num_queries(11):
        response = client.get("/worklist/")
    assert response.status_code == 200 and len(response.context["page"]) == 50


def test_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    client = logged_in(submitter)
    # session, user, 2x permissions, batch, progress counts, studies, their results, site setting (banner),
    # session save (3)
    with django_assert_num_queries(12):
        response = client.get(f"/batches/{thousand_studies.pk}/")
    assert response.status_code == 200 and len(response.context["studies"]) == 1000


def test_api_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    from screening import tokens

    client = Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(submitter)}")
    # ... includes two for the token's rate-limit window (count this request, read or start the minute)
    with django_assert_num_queries(9):
        response = client.get(f"/api/v1/batches/{thousand_studies.pk}")
    assert response.status_code == 200 and len(response.json()["studies"]) == 1000
