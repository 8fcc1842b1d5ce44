"""Which children the population check sends outside: flag rates per subgroup, not only on average.

Issue 25 found the shipped check marking 4.5 % of a held-out pediatric test
set outside, nearly all of them normal films. The validation split's average
(1.2 %) hides where that comes from, so this prints the rates per subgroup of
the children it was never fitted on, and of the full-resolution copies:

* by finding and by the data set's own file series: normal ``IM-…`` films,
  normal ``NORMAL2-IM-…`` films (a second series of normals), bacterial and
  viral pneumonia;
* by the original film's aspect ratio (``chest_xray_hires`` keeps it): films
  squarer than 1.2 (most of them normal) against the rest. Every film is
  squashed to 224 x 224 for the model, so a square original is squashed less.

    python -m ml.evaluation.population_groups --data ../shared/data [--population ml/models/population-v1] \
        [--write-card]

``--write-card`` keeps the figures in the population card (``subgroups``).

Features come from ``ml.training.population_fit``'s cache (computed on first use).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ml.serving.gate import DEFAULT_GATE_DIR, ChestXrayGate
from ml.serving.population_check import CARD_FILE, DEFAULT_DIR, PopulationCheck
from ml.training.population_fit import image_files, load_data, manifest_rows

SQUARE_BELOW = 1.2
SERIES = ("normal IM-", "normal NORMAL2-", "bacterial pneumonia", "viral pneumonia")


def series(path: str, label: str) -> str:
    """The subgroup of one Kermany file, from its name: ``NORMAL2-IM-0001-0001.jpeg``, ``person1_virus_6.jpeg``."""
    name = path.rsplit("/", 1)[-1]
    if label == "NORMAL":
        return SERIES[1] if name.startswith("NORMAL2-") else SERIES[0]
    return SERIES[3] if "_virus_" in name else SERIES[2]


def hires_aspects(root: Path, files: list[Path]) -> np.ndarray:
    """Width / height of each hires file's original (its manifest), in ``files`` order."""
    with open(root / "chest_xray_hires" / "MANIFEST.csv", newline="") as handle:
        rows = {(r["split"], r["label"], r["file"]): r for r in csv.DictReader(handle)}
    aspects = []
    for path in files:
        row = rows[(path.parent.parent.name, path.parent.name, path.name)]
        aspects.append(int(row["orig_width"]) / int(row["orig_height"]))
    return np.array(aspects)


def rates(flagged: np.ndarray, groups: np.ndarray, names) -> dict[str, dict]:
    return {
        name: {"n": int((groups == name).sum()), "flagged": int(flagged[groups == name].sum())}
        for name in names
        if (groups == name).any()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--manifest", default="ml/splits/v1.csv")
    parser.add_argument("--population", default=str(DEFAULT_DIR))
    parser.add_argument("--write-card", action="store_true", help="store the figures in the card as 'subgroups'")
    args = parser.parse_args(argv)
    root = Path(args.data)
    check = PopulationCheck.load(args.population)
    data = load_data(root, args.manifest, ChestXrayGate.load(DEFAULT_GATE_DIR))

    val_rows = manifest_rows(args.manifest, "val")
    val_groups = np.array([series(r["path"], r["label"]) for r in val_rows])
    hires = image_files(root / "chest_xray_hires" / "train")
    hires_groups = np.array([series(str(p), p.parent.name) for p in hires])
    square = hires_aspects(root, hires) < SQUARE_BELOW
    hires_val = data.clean["hires_val_role"]  # load_data splits the hires films by the manifest's roles
    report = {
        "population": check.version,
        "validation split, by series": rates(check.flag(data.clean["child_val"]), val_groups, SERIES),
        "hires (training and validation films), by series": rates(
            check.flag(data.clean["hires"]), hires_groups, SERIES
        ),
        f"hires, by aspect of the original (square: below {SQUARE_BELOW})": rates(
            check.flag(data.clean["hires"]), np.where(square, "square", "wider"), ("square", "wider")
        ),
        "hires films of the validation split": {"n": len(hires_val), "flagged": int(check.flag(hires_val).sum())},
    }
    if args.write_card:
        card_path = Path(args.population) / CARD_FILE
        card = json.loads(card_path.read_text())
        card["subgroups"] = {
            "command": "python -m ml.evaluation.population_groups --data ../shared/data --write-card",
            **{title: table for title, table in report.items() if title != "population"},
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    for title, table in report.items():
        if title == "population":
            print(f"population check {table}")
            continue
        print(title)
        for name, row in table.items() if "n" not in table else [("all", table)]:
            print(f"  {name:<22}{row['flagged']:>5} / {row['n']:<5}{row['flagged'] / max(1, row['n']):>8.1%}")
    return report


if __name__ == "__main__":
    main()
