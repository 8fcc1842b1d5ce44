"""How much of each heatmap lies inside hand-drawn lungs, for any model folder.

    python -m ml.evaluation.heatmap_check --model ml/models/v5 --boxes tests/fixtures/xray/LUNG_BOXES.csv
    python -m ml.evaluation.heatmap_check --model ml/models/v5 --boxes ml/splits/v1_lung_boxes.json \
        --data ../shared/data/chest_xray --hires ../shared/data/chest_xray_hires/train

Two kinds of boxes file:

- ``LUNG_BOXES.csv`` of the test fixtures (``file,x0,y0,x1,y1``, files
  relative to it): one box around both lungs per pneumonia fixture; prints
  each image's share.
- ``ml/splits/v1_lung_boxes.json`` (``ml.evaluation.lung_boxes``): one box per
  lung on 60 validation images; prints, for the 224x224 copies and their
  full-resolution twins, the mean share of the map inside the lungs and how
  often the salient box's centre is inside a lung on the pneumonia images.

A map whose mass sits outside (borders, markers, shoulders) explains the
score with something that is not lung. The map measured is the one a reader
sees: for a card with a lung-field head, the lung-weighted map. The head of
v5 was fitted on the JSON's images, so its figures there are in-sample;
``ml.evaluation.lung_field_fit`` gives the out-of-fold ones.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def lung_mass(model_dir: str | Path, boxes: str | Path) -> list[tuple[str, float, float]]:
    """(file, probability, share of the map inside its lung box) for each annotated image in a CSV ``boxes``."""
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


def lung_figures(model_dir: str | Path, boxes: str | Path, data: str | Path, hires: str | Path) -> dict[str, dict]:
    """Summary figures on the per-lung boxes of the validation images, per resolution (``224`` and ``hires``)."""
    from ml.evaluation import lung_boxes
    from ml.serving.heatmap import ExplainingScreener
    from ml.serving.inference import Screener

    explainer = ExplainingScreener(Screener.load(model_dir))
    entries = [e for e in lung_boxes.load(boxes)["images"] if e["lungs"]]
    return {
        name: lung_boxes.figures([x.heatmap for x in explainer.explain(images)], entries)
        for name, images in lung_boxes.inputs(entries, data, hires).items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder with model.keras and card.json")
    parser.add_argument("--boxes", required=True, help="LUNG_BOXES.csv of the fixtures or ml/splits/v1_lung_boxes.json")
    parser.add_argument("--data", help="chest_xray folder, for a JSON boxes file")
    parser.add_argument("--hires", help="chest_xray_hires/train folder, for a JSON boxes file")
    args = parser.parse_args(argv)
    if args.boxes.endswith(".json"):
        if not (args.data and args.hires):
            parser.error("a JSON boxes file needs --data and --hires")
        for name, f in lung_figures(args.model, args.boxes, args.data, args.hires).items():
            print(
                f"{name:5s} mass inside lungs mean {f['mass_inside_mean']:.3f} (min {f['mass_inside_min']:.3f}) "
                f"over {f['n']} images; box centre inside for {f['centre_inside_positives']:.3f} "
                f"of {f['n_positives']} pneumonias"
            )
        return
    for name, probability, inside in lung_mass(args.model, args.boxes):
        print(f"{name}  P={probability:.3f}  inside lungs {inside:.0%}")


if __name__ == "__main__":
    main()
