"""Management commands: API tokens, demo accounts, folder submission."""

import json
import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from screening.models import ApiToken, Study
from tests.conftest import XRAYS


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_api_token_prints_a_working_key_and_stores_only_its_hash(submitter):
    key = run("create_api_token", "sam").strip()
    assert ApiToken.objects.get().key_hash != key
    assert key not in ApiToken.objects.get().key_hash
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/v1/batches/999").status_code == 404


def test_create_api_token_for_unknown_user_fails_clearly(db):
    with pytest.raises(CommandError, match="No active user"):
        run("create_api_token", "nobody")


def test_demo_accounts_are_created_once_with_roles(db, tmp_path, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="local trials"):
        run("create_demo_accounts")
    credentials = tmp_path / "accounts.txt"
    first = run("create_demo_accounts", "--i-know-this-is-not-production", "--credentials-file", str(credentials))
    second = run("create_demo_accounts", "--i-know-this-is-not-production", "--credentials-file", str(credentials))
    assert first == second
    assert "radiologist" in first
    username, password = first.splitlines()[1].split()[:2]
    assert Client().post("/accounts/login/", {"username": username, "password": password}).status_code == 302


def test_submit_folder_accounts_for_every_file(submitter, tmp_path, publish):
    for p in XRAYS[:3]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / ".hidden.jpeg").write_bytes(XRAYS[0].read_bytes())
    out = run("submit_folder", str(tmp_path), "--user", "sam", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["file"] for line in lines) == sorted([p.name for p in XRAYS[:3]] + ["readme.txt"])
    assert {line["status"] for line in lines if line["file"] == "readme.txt"} == {"REFUSED"}
    assert Study.objects.count() == 3


def test_submit_folder_refuses_users_without_permission(radiologist, tmp_path):
    with pytest.raises(CommandError, match="may not submit"):
        run("submit_folder", str(tmp_path), "--user", "rita")
