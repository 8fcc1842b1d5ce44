"""File-name parsing and folder scanning: the basis of every patient-wise split."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml.training.data import NameInfo, parse_name, scan_folder

XRAY = Path(__file__).resolve().parents[1] / "fixtures" / "xray"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("IM-0115-0001.jpeg", NameInfo("NORMAL", "normal", "normal:115")),
        ("IM-0497-0001-0002.jpeg", NameInfo("NORMAL", "normal", "normal:497")),
        ("NORMAL2-IM-0516-0001.jpeg", NameInfo("NORMAL", "normal", "normal:516")),
        ("person1010_bacteria_2941.jpeg", NameInfo("PNEUMONIA", "bacteria", "bacteria:1010")),
        ("person482_virus_984.jpeg", NameInfo("PNEUMONIA", "virus", "virus:482")),
        ("person447_virus_921_1.jpeg", NameInfo("PNEUMONIA", "virus", "virus:447")),
        ("PNEUMONIA__person1177_virus_1999.jpeg", NameInfo("PNEUMONIA", "virus", "virus:1177")),
        ("NORMAL__IM-0199-0001.PNG", NameInfo("NORMAL", "normal", "normal:199")),
    ],
)
def test_it_parses_kermany_names(name, expected):
    assert parse_name(name) == expected


def test_normal_series_with_the_same_number_are_one_patient():
    # Conservative choice from the data card: IM-N and NORMAL2-IM-N may be the same child.
    assert parse_name("IM-0516-0001.jpeg").patient == parse_name("NORMAL2-IM-0516-0003.jpeg").patient


def test_bacterial_and_viral_person_numbers_are_different_patients():
    assert parse_name("person1_bacteria_1.jpeg").patient != parse_name("person1_virus_6.jpeg").patient


@pytest.mark.parametrize("name", ["scan.png", "person12.jpeg", "IM-12.jpeg", "person3_fungus_1.jpeg"])
def test_it_returns_none_for_names_outside_the_scheme(name):
    assert parse_name(name) is None


def test_scan_folder_labels_fixture_images_by_folder(fixture_records):
    assert len(fixture_records) == 8
    assert {r.label for r in fixture_records} == {"NORMAL", "PNEUMONIA"}
    by_name = {r.path.split("/")[-1]: r for r in fixture_records}
    assert by_name["person1015_virus_1701.jpeg"].subtype == "virus"
    assert by_name["person1015_virus_1701.jpeg"].target == 1
    assert by_name["IM-0115-0001.jpeg"].target == 0


def test_scan_folder_keeps_unparseable_names_as_one_patient_each(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "PNEUMONIA").mkdir()
    shutil.copy(XRAY / "NORMAL" / "IM-0115-0001.jpeg", tmp_path / "NORMAL" / "a.jpeg")
    shutil.copy(XRAY / "NORMAL" / "IM-0115-0001.jpeg", tmp_path / "PNEUMONIA" / "a.jpeg")
    records = scan_folder(tmp_path)
    assert [r.subtype for r in records] == [None, None]
    assert len({r.patient for r in records}) == 2


def test_scan_folder_rejects_a_name_that_contradicts_its_folder(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    shutil.copy(XRAY / "PNEUMONIA" / "person482_virus_984.jpeg", tmp_path / "NORMAL")
    with pytest.raises(ValueError, match="filed under NORMAL"):
        scan_folder(tmp_path)


def test_scan_folder_without_images_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path)
