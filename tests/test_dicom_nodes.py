"""Who may call and where results go: parsed strictly, refused loudly."""

import pytest

from screening.dicom.nodes import Caller, Destination, InvalidNode, caller_allowed, parse_callers, parse_destinations


def test_callers_by_title_by_title_and_host_and_any_title_from_a_host():
    callers = parse_callers(["MODALITY1", "PACS@10.0.0.7", "*@127.0.0.1"])
    assert caller_allowed(callers, "MODALITY1", "192.168.1.9")
    assert caller_allowed(callers, "PACS", "10.0.0.7")
    assert not caller_allowed(callers, "PACS", "10.0.0.8")
    assert caller_allowed(callers, "ANYTHING", "127.0.0.1")
    assert not caller_allowed(callers, "ANYTHING", "10.0.0.7")


def test_nobody_is_allowed_when_no_caller_is_named():
    assert not caller_allowed(parse_callers([]), "MODALITY1", "127.0.0.1")


@pytest.mark.parametrize("text", ["*", "WAY_TOO_LONG_AE_TITLE", "BAD\\AE", "AE@bad host"])
def test_malformed_callers_are_refused(text):
    with pytest.raises(InvalidNode):
        Caller.parse(text)


def test_destinations_parse_and_print_back():
    (pacs,) = parse_destinations(["PACS@127.0.0.1:4242"])
    assert pacs == Destination("PACS", "127.0.0.1", 4242)
    assert str(pacs) == "PACS@127.0.0.1:4242"


@pytest.mark.parametrize("text", ["PACS@127.0.0.1", "127.0.0.1:104", "PACS@host:0", "PACS@host:70000", "@host:104"])
def test_malformed_destinations_are_refused(text):
    with pytest.raises(InvalidNode):
        Destination.parse(text)


def test_the_same_destination_twice_is_refused():
    with pytest.raises(InvalidNode, match="twice"):
        parse_destinations(["PACS@h:104", "PACS@h:104"])


@pytest.mark.e2e
def test_settings_refuse_a_malformed_destination_at_start_up(monkeypatch):
    import subprocess
    import sys

    from harness.worker_process import ROOT, base_env

    env = {**base_env(), "DJANGO_SECRET_KEY": "x", "DICOM_DESTINATIONS": "PACS@127.0.0.1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings'; django.setup()",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DICOM_DESTINATIONS" in done.stderr
    assert "AE@host:port" in done.stderr
