"""Query counts on list pages stay fixed with 1,000 studies present (no N+1)."""

import pytest
from django.test import Client
from django.utils import timezone

from screening.models import Result, Study
from tests.factories import batch_for


@pytest.fixture
def thousand_studies(submitter):
    batch = batch_for(submitter)
    now = timezone.now()
    studies = Study.objects.bulk_create(
        Study(batch=batch, file=f"studies/x/{i}.png", original_name=f"{i}.png", sha256=f"{i:064x}", size_bytes=1,
              format="png", status=Study.Status.DONE, score=(i % 997) / 997, model_label="NORMAL", finished_at=now)
        for i in range(1000)
    )
    Result.objects.bulk_create(
        Result(study=s, model_version="v-test", probability=s.score, label="NORMAL", threshold=0.5, inference_ms=1.0)
        for s in studies
    )
    return batch


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_worklist_queries_are_pinned(radiologist, thousand_studies, django_assert_num_queries):
    client = logged_in(radiologist)
    # session, user, 2x permissions, tab counts, page count, page rows, session save (3)
    with django_assert_num_queries(10):
        response = client.get("/worklist/")
    assert response.status_code == 200 and len(response.context["page"]) == 50


def test_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    client = logged_in(submitter)
    # session, user, 2x permissions, batch, progress counts, studies, their results, session save (3)
    with django_assert_num_queries(11):
        response = client.get(f"/batches/{thousand_studies.pk}/")
    assert response.status_code == 200 and len(response.context["studies"]) == 1000


def test_api_batch_detail_queries_are_pinned(submitter, thousand_studies, django_assert_num_queries):
    from screening import tokens

    client = Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(submitter)}")
    with django_assert_num_queries(8):
        response = client.get(f"/api/v1/batches/{thousand_studies.pk}")
    assert response.status_code == 200 and len(response.json()["studies"]) == 1000
