"""Role matrix: every page and API endpoint, for each role and for an anonymous visitor.

Expected codes: 200/202 allowed; 302 anonymous page → login; 401 anonymous
API; 403 logged in without the permission; 404 an object the user may not see.
"""

import io

import pytest
from django.test import Client

from screening.api import tokens
from tests.factories import batch_for, scored_study

ROLES = ["anonymous", "submitter", "other_submitter", "radiologist", "auditor", "outsider"]

# (method, url template, {role: expected status})
MATRIX = [
    (
        "get",
        "/batches/",
        dict(anonymous=302, submitter=200, other_submitter=200, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "get",
        "/batches/new/",
        dict(anonymous=302, submitter=200, other_submitter=200, radiologist=403, auditor=403, outsider=403),
    ),
    (
        "get",
        "/batches/{batch}/",
        dict(anonymous=302, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "get",
        "/batches/{batch}/export.csv",
        dict(anonymous=302, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "get",
        "/worklist/",
        dict(anonymous=302, submitter=403, other_submitter=403, radiologist=200, auditor=403, outsider=403),
    ),
    (
        "get",
        "/worklist/export.csv",
        dict(anonymous=302, submitter=403, other_submitter=403, radiologist=200, auditor=403, outsider=403),
    ),
    (
        "get",
        "/studies/{study}/",
        dict(anonymous=302, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "get",
        "/studies/{study}/image.png",
        dict(anonymous=302, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "get",
        "/studies/{study}/heatmap.png",
        dict(anonymous=302, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=403),
    ),
    (
        "post",
        "/studies/{study}/",
        dict(anonymous=302, submitter=403, other_submitter=404, radiologist=302, auditor=403, outsider=403),
    ),
    (
        "get",
        "/admin/screening/study/",
        dict(anonymous=302, submitter=302, other_submitter=302, radiologist=302, auditor=200, outsider=302),
    ),
    (
        "get",
        "/admin/screening/auditevent/",
        dict(anonymous=302, submitter=302, other_submitter=302, radiologist=302, auditor=200, outsider=302),
    ),
    (
        "api-get",
        "/api/v1/batches/{batch}",
        dict(anonymous=401, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=404),
    ),
    (
        "api-get",
        "/api/v1/studies/{study}",
        dict(anonymous=401, submitter=200, other_submitter=404, radiologist=200, auditor=200, outsider=404),
    ),
    (
        "api-post",
        "/api/v1/studies",
        dict(anonymous=401, submitter=202, other_submitter=202, radiologist=403, auditor=403, outsider=403),
    ),
    (
        "api-post",
        "/api/v1/batches",
        dict(anonymous=401, submitter=202, other_submitter=202, radiologist=403, auditor=403, outsider=403),
    ),
]


@pytest.fixture
def world(submitter, other_submitter, radiologist, auditor, outsider, settings):
    batch = batch_for(submitter)
    study = scored_study(batch, 0.8, media_root=settings.MEDIA_ROOT)
    return {
        "users": {
            "submitter": submitter,
            "other_submitter": other_submitter,
            "radiologist": radiologist,
            "auditor": auditor,
            "outsider": outsider,
        },
        "batch": batch.pk,
        "study": study.pk,
    }


def client_for(world, role, api: bool) -> Client:
    if role == "anonymous":
        return Client()
    user = world["users"][role]
    if api:
        return Client(HTTP_AUTHORIZATION=f"Token {tokens.create_token(user)}")
    client = Client()
    client.force_login(user)
    return client


def upload_payload(url):
    from tests.conftest import XRAYS

    handle = io.BytesIO(XRAYS[0].read_bytes())
    handle.name = "x.jpeg"
    return {"file": handle} if url.endswith("studies") else {"files": [handle]}


@pytest.mark.parametrize(("method", "template", "expected"), MATRIX, ids=[f"{m} {t}" for m, t, _ in MATRIX])
def test_role_matrix(world, method, template, expected, publish):
    url = template.format(batch=world["batch"], study=world["study"])
    for role in ROLES:
        client = client_for(world, role, api=method.startswith("api"))
        if method == "get" or method == "api-get":
            response = client.get(url)
        elif method == "post":
            response = client.post(url, {"agrees_with_model": "yes", "finding": "normal"})
        else:
            response = client.post(url, upload_payload(url))
        assert response.status_code == expected[role], f"{role} {method} {url}: {response.status_code}"


def test_wrong_passwords_lock_the_login_from_that_address(submitter):
    """Issue 12: 60 wrong passwords at 3 per second, then the right one, was accepted."""
    from django.test import Client

    attacker = Client(REMOTE_ADDR="192.0.2.7")
    answers = [
        attacker.post("/accounts/login/", {"username": "sam", "password": "guess"}).status_code for _ in range(6)
    ]
    assert answers == [200, 200, 200, 200, 429, 429]  # the fifth failure locks (LOGIN_FAILURE_LIMIT)
    locked = attacker.post("/accounts/login/", {"username": "sam", "password": "pw-sam"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in attacker.session
    # The real user, elsewhere, still gets in; a success resets their own count.
    colleague = Client(REMOTE_ADDR="198.51.100.4")
    assert colleague.post("/accounts/login/", {"username": "sam", "password": "pw-sam"}).status_code == 302
