"""Hand-drawn lung boxes on validation images: choosing the images and drawing sheets to annotate and check.

A heatmap that lights the clavicles or the film border explains the score with
something that is not lung, and a reader who sees that stops trusting the
score. Measuring it needs lungs drawn by a person, on images no model was
fitted on: this picks them from the validation role of the split manifest
(fold 0), one image per patient, half normal and half pneumonia, among files
that also have a full-resolution twin in ``chest_xray_hires`` so both
resolutions can be checked against the same boxes.

Boxes are stored as fractions of the image (x0, y0, x1, y1), one per lung, in
``ml/splits/v1_lung_boxes.json``. Fractions survive the 224×224 squash, so one
annotation serves the training copy and its full-resolution twin.

    python -m ml.evaluation.lung_boxes select --hires ../shared/data/chest_xray_hires/train --n 30
    python -m ml.evaluation.lung_boxes sheet --hires ../shared/data/chest_xray_hires/train --out ml/runs/lung_sheets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from ml.training.runs import DEFAULT_MANIFEST
from ml.training.split import file_sha256, read_manifest

BOXES_FILE = Path(__file__).resolve().parents[1] / "splits" / "v1_lung_boxes.json"
SEED = 20261202
CONVENTION = (
    "Two boxes per image, one per lung, as fractions of the image width and height (x0, y0, x1, y1), "
    "image-left lung first. Each box is the smallest rectangle holding that lung's aerated field as seen on the "
    "film: apex (above the clavicle) to the costophrenic angle and dome of the diaphragm, lateral rib margin to the "
    "mediastinal/cardiac border. Drawn by eye on the full-resolution twin with a 5 % grid."
)


def load(path: str | Path = BOXES_FILE) -> dict:
    return json.loads(Path(path).read_text())


def lungs_of(entry: dict) -> list[tuple[float, float, float, float]]:
    return [tuple(box) for box in entry["lungs"]]


def inputs(entries: list[dict], data: str | Path, hires: str | Path) -> dict:
    """The annotated images as model inputs: ``"224"`` (the training copies) and ``"hires"`` (squashed twins)."""
    import numpy as np

    from ml.serving import pipeline
    from ml.training.data import load_input

    return {
        "224": np.stack([load_input(Path(data) / e["path"]) for e in entries]),
        "hires": np.stack([pipeline.prepare(Path(hires) / e["path"].removeprefix("train/")).pixels for e in entries]),
    }


def centre_inside(box, lungs) -> bool:
    """Whether a salient box's centre lies inside one of the lung boxes (False for no box)."""
    if box is None:
        return False
    u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(x0 <= u <= x1 and y0 <= v <= y1 for x0, y0, x1, y1 in lungs)


def figures(heatmaps, entries: list[dict]) -> dict:
    """Share of each map inside its image's lungs, and where the salient box of each pneumonia map is centred."""
    import numpy as np

    from ml.serving.heatmap import mass_inside, salient_box

    inside = [mass_inside(h, lungs_of(e)) for h, e in zip(heatmaps, entries, strict=True)]
    centres = [
        centre_inside(salient_box(h), lungs_of(e))
        for h, e in zip(heatmaps, entries, strict=True)
        if e["label"] == "PNEUMONIA"
    ]
    return {
        "mass_inside_mean": float(np.mean(inside)),
        "mass_inside_median": float(np.median(inside)),
        "mass_inside_min": float(np.min(inside)),
        "centre_inside_positives": float(np.mean(centres)),
        "n": len(inside),
        "n_positives": len(centres),
    }


def select(hires: str | Path, n_per_class: int, manifest: str | Path = DEFAULT_MANIFEST) -> list[dict]:
    """``n_per_class`` normal and pneumonia validation images, one per patient, seeded, with a hires twin."""
    have_twin = {p.relative_to(Path(hires)).as_posix() for p in Path(hires).rglob("*.jpeg")}
    by_patient: dict[str, dict] = {}
    for row in read_manifest(manifest):
        twin = row["path"].removeprefix("train/")
        if row["role"] == "val" and twin in have_twin:
            by_patient.setdefault(row["patient"], row)
    rng = random.Random(SEED)
    chosen = []
    for label in ("NORMAL", "PNEUMONIA"):
        rows = sorted((r for r in by_patient.values() if r["label"] == label), key=lambda r: r["path"])
        chosen += rng.sample(rows, n_per_class)
    return [{"path": r["path"], "label": r["label"], "subtype": r["subtype"], "lungs": []} for r in chosen]


def sheet(image_path: Path, lungs: list, out: Path, scale: int = 640) -> Path:
    """The image enlarged with a labelled 5 % grid and any drawn boxes, for annotating by eye and checking."""
    from PIL import Image, ImageDraw

    image = Image.open(image_path).convert("RGB")
    image = image.resize((scale, round(scale * image.height / image.width)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for step in range(1, 20):
        f = step / 20
        colour = (0, 200, 255) if step % 2 == 0 else (0, 90, 140)
        draw.line([(f * w, 0), (f * w, h)], fill=colour, width=1)
        draw.line([(0, f * h), (w, f * h)], fill=colour, width=1)
        if step % 2 == 0:
            draw.text((f * w + 2, 2), f"{f:.1f}", fill=(255, 255, 0))
            draw.text((2, f * h + 2), f"{f:.1f}", fill=(255, 255, 0))
    for box, colour in zip(lungs, [(255, 60, 60), (60, 255, 60)], strict=False):
        x0, y0, x1, y1 = box
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=colour, width=3)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    chooser = sub.add_parser("select", help="write the image list (boxes empty) to annotate")
    chooser.add_argument("--hires", required=True)
    chooser.add_argument("--n", type=int, default=30, help="images per class")
    chooser.add_argument("--out", default=str(BOXES_FILE))
    drawer = sub.add_parser("sheet", help="draw grid (and boxes, where present) on every listed image")
    drawer.add_argument("--hires", required=True)
    drawer.add_argument("--boxes", default=str(BOXES_FILE))
    drawer.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    if args.command == "select":
        out = Path(args.out)
        if out.exists():
            raise SystemExit(f"{out} exists; not overwriting annotations")
        document = {
            "manifest": "ml/splits/v1.csv",
            "manifest_sha256": file_sha256(DEFAULT_MANIFEST),
            "seed": SEED,
            "convention": CONVENTION,
            "images": select(args.hires, args.n),
        }
        out.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {len(document['images'])} images to {out}")
    else:
        for entry in load(args.boxes)["images"]:
            source = Path(args.hires) / entry["path"].removeprefix("train/")
            name = hashlib.sha1(entry["path"].encode()).hexdigest()[:8]
            print(sheet(source, lungs_of(entry), Path(args.out) / f"{Path(entry['path']).stem}_{name}.png"))


if __name__ == "__main__":
    main()
