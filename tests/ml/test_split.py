"""The patient-wise split: no patient on both sides, stratified, reproducible."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ml.training.data import ImageRecord, parse_name
from ml.training.split import make_manifest, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "ml" / "splits" / "v1.csv"


def synthetic_records(n_patients: int = 300) -> list[ImageRecord]:
    """Patients with 1-4 images each across the three strata, like the real data."""
    records = []
    for n in range(n_patients):
        subtype = ("normal", "bacteria", "virus")[n % 3]
        label = "NORMAL" if subtype == "normal" else "PNEUMONIA"
        for m in range(1 + n % 4):
            name = f"IM-{n:04d}-{m:04d}.jpeg" if subtype == "normal" else f"person{n}_{subtype}_{m}.jpeg"
            info = parse_name(name)
            records.append(ImageRecord(f"train/{label}/{name}", label, subtype, info.patient))
    return records


def roles_by_patient(rows) -> dict[str, set[str]]:
    roles = defaultdict(set)
    for row in rows:
        roles[row["patient"]].add(row["role"])
    return roles


def test_no_patient_is_on_both_sides_of_a_fresh_split():
    rows = make_manifest(synthetic_records(), seed=7)
    assert all(len(r) == 1 for r in roles_by_patient(rows).values())


def test_validation_share_is_between_10_and_15_percent_in_every_stratum():
    rows = make_manifest(synthetic_records(600), seed=7)
    for subtype in ("normal", "bacteria", "virus"):
        chosen = [r for r in rows if r["subtype"] == subtype]
        share = sum(r["role"] == "val" for r in chosen) / len(chosen)
        assert 0.10 <= share <= 0.15, (subtype, share)


def test_split_is_reproducible_and_depends_on_the_seed():
    records = synthetic_records()
    assert make_manifest(records, seed=1) == make_manifest(records, seed=1)
    assert make_manifest(records, seed=1) != make_manifest(records, seed=2)


def test_patient_with_images_of_two_subtypes_is_refused():
    records = [ImageRecord("a.jpeg", "NORMAL", "normal", "p1"), ImageRecord("b.jpeg", "PNEUMONIA", "virus", "p1")]
    with pytest.raises(ValueError, match="several subtypes"):
        make_manifest(records)


def test_manifest_round_trips_through_csv(tmp_path: Path):
    rows = make_manifest(synthetic_records(30))
    write_manifest(rows, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == rows


def test_committed_manifest_has_no_patient_leak_and_conservative_keys():
    rows = read_manifest(COMMITTED)
    assert len(rows) == 5216
    assert all(len(r) == 1 for r in roles_by_patient(rows).values())
    for row in rows:  # keys recomputed from the file name: normal by N alone, pneumonia by (subtype, N)
        info = parse_name(Path(row["path"]).name)
        assert (info.label, info.subtype, info.patient) == (row["label"], row["subtype"], row["patient"])
    share = Counter(r["role"] for r in rows)["val"] / len(rows)
    assert 0.10 <= share <= 0.15
