"""How much of each heatmap lies inside the hand-annotated lungs of the fixture X-rays.

    python -m ml.heatmap_check --model ml/models/v4

``tests/fixtures/xray/LUNG_BOXES.csv`` holds a box around both lungs for each
pneumonia fixture (drawn by hand, as image fractions). A map whose mass sits
outside it (borders, markers, shoulders) explains the score with something
that is not lung. The test suite only asks for more than half; this prints the
figure for any model folder, so model cards and READMEs can quote it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

LUNG_BOXES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "xray" / "LUNG_BOXES.csv"


def lung_mass(model_dir: str | Path) -> list[tuple[str, float, float]]:
    """(file, probability, share of the map inside its lung box) for each annotated fixture."""
    from ml.decode import decode
    from ml.heatmap import ExplainingScreener, mass_inside
    from ml.inference import Screener
    from ml.preprocess import squash_to_input

    explainer = ExplainingScreener(Screener.load(model_dir))
    result = []
    for row in csv.DictReader(LUNG_BOXES.open()):
        image = squash_to_input(decode(LUNG_BOXES.parent / row["file"]).pixels)
        (explained,) = explainer.explain(image[None])
        box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        result.append((row["file"], explained.prediction.probability, mass_inside(explained.heatmap, box)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder with model.keras and card.json")
    args = parser.parse_args(argv)
    for name, probability, inside in lung_mass(args.model):
        print(f"{name}  P={probability:.3f}  inside lungs {inside:.0%}")


if __name__ == "__main__":
    main()
