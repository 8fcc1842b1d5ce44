"""How much of each heatmap lies inside the hand-annotated lungs of the fixture X-rays.

    python -m ml.evaluation.heatmap_check --model ml/models/v4 --boxes tests/fixtures/xray/LUNG_BOXES.csv

A boxes file (``file,x0,y0,x1,y1``; files relative to it, boxes as image
fractions) holds a box around both lungs for each annotated image; the test
fixtures' ``LUNG_BOXES.csv`` has one per pneumonia fixture, drawn by hand. A map whose mass sits
outside it (borders, markers, shoulders) explains the score with something
that is not lung. The test suite only asks for more than half; this prints the
figure for any model folder, so model cards and READMEs can quote it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def lung_mass(model_dir: str | Path, boxes: str | Path) -> list[tuple[str, float, float]]:
    """(file, probability, share of the map inside its lung box) for each annotated image in ``boxes``."""
    from ml.serving import pipeline
    from ml.serving.heatmap import ExplainingScreener, mass_inside
    from ml.serving.inference import Screener

    explainer = ExplainingScreener(Screener.load(model_dir))
    boxes = Path(boxes)
    result = []
    for row in csv.DictReader(boxes.open()):
        image = pipeline.prepare(boxes.parent / row["file"]).pixels
        (explained,) = explainer.explain(image[None])
        box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        result.append((row["file"], explained.prediction.probability, mass_inside(explained.heatmap, box)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder with model.keras and card.json")
    parser.add_argument("--boxes", required=True, help="CSV of lung boxes, e.g. tests/fixtures/xray/LUNG_BOXES.csv")
    args = parser.parse_args(argv)
    for name, probability, inside in lung_mass(args.model, args.boxes):
        print(f"{name}  P={probability:.3f}  inside lungs {inside:.0%}")


if __name__ == "__main__":
    main()
