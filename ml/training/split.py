"""A seeded, stratified, patient-wise split of ``train/``, saved as a manifest.

Every number we report rests on this file, so it is written once, committed,
and read back by training and evaluation instead of being recomputed. Patients
(not images) are dealt into ``folds`` folds within each stratum (normal,
bacteria, virus), each patient going to the fold with the fewest images of that
stratum so far; fold 0 is the validation set and the other folds can serve
patient-wise cross-validation for candidate comparisons.

    python -m ml.training.split --data ../shared/data/chest_xray --out ml/splits/v1.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ml.training.data import ImageRecord, scan_folder

DEFAULT_SEED = 20261123
DEFAULT_FOLDS = 8  # fold 0 = validation: 1/8 = 12.5 % of the patients' images
FIELDS = ("path", "label", "subtype", "patient", "fold", "role")


def assign_folds(records: list[ImageRecord], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Map each patient key to a fold, balancing image counts per stratum."""
    by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_patient[record.patient].append(record)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, items in by_patient.items():
        subtypes = {item.subtype or item.label for item in items}
        if len(subtypes) != 1:
            raise ValueError(f"patient {patient} has images of several subtypes: {sorted(subtypes)}")
        strata[subtypes.pop()].append(patient)

    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for stratum in sorted(strata):
        patients = sorted(strata[stratum])
        rng.shuffle(patients)
        images_in_fold = [0] * folds
        for patient in patients:
            fold = int(np.argmin(images_in_fold))  # first of the emptiest folds
            fold_of[patient] = fold
            images_in_fold[fold] += len(by_patient[patient])
    return fold_of


def make_manifest(
    records: list[ImageRecord], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED, val_fold: int = 0
) -> list[dict[str, str]]:
    fold_of = assign_folds(records, folds, seed)
    return [
        {
            "path": r.path,
            "label": r.label,
            "subtype": r.subtype or "",
            "patient": r.patient,
            "fold": str(fold_of[r.patient]),
            "role": "val" if fold_of[r.patient] == val_fold else "train",
        }
        for r in records
    ]


def write_manifest(rows: list[dict[str, str]], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def records_for(rows: list[dict[str, str]], role: str) -> list[ImageRecord]:
    """The manifest rows of one role ("train" or "val") as records, in manifest order."""
    return [
        ImageRecord(path=row["path"], label=row["label"], subtype=row["subtype"] or None, patient=row["patient"])
        for row in rows
        if row["role"] == role
    ]


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding train/NORMAL and train/PNEUMONIA")
    parser.add_argument("--out", required=True, help="manifest CSV to write")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    records = scan_folder(Path(args.data) / "train")
    records = [ImageRecord("train/" + r.path, r.label, r.subtype, r.patient) for r in records]
    rows = make_manifest(records, args.folds, args.seed)
    write_manifest(rows, args.out)
    for role in ("train", "val"):
        chosen = [row for row in rows if row["role"] == role]
        counts = defaultdict(int)
        for row in chosen:
            counts[row["subtype"]] += 1
        patients = len({row["patient"] for row in chosen})
        print(f"{role}: {len(chosen)} images, {patients} patients, {dict(sorted(counts.items()))}")
    print(f"wrote {args.out} sha256={file_sha256(args.out)}")


if __name__ == "__main__":
    main()
