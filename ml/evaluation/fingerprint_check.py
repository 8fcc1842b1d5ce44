"""How far training images and other films lie from a model's training fingerprints.

The match rule (``ml.serving.fingerprint.MATCH_MAX_BITS``) must catch a
training film however a site re-saved it, and must not catch a new patient
of the same hospital. This measures both sides and prints the figures the
model card keeps under ``training_fingerprints.measured``:

    python -m ml.evaluation.fingerprint_check --model-dir ml/models/v5 \
        --data ../shared/data [--write-card]

Training films, re-found: the full-resolution originals and the hires copies
(aspect kept) of training images, those copies re-saved at JPEG quality 40
and half size, with gamma 0.7, and auto-contrasted. Other films: each
training image against the training images of every *other* patient (normal
files keyed by their number alone, the data card's conservative choice) —
the closest stand-in for the held-out test split of the same hospital —, the
official ``val/`` folder and the adult development set.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ml.serving import fingerprint as fp
from ml.training.fingerprints import fingerprint_files


def _resaved(image: Image.Image) -> Image.Image:
    small = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue()))


VARIANTS = {
    "hires, JPEG q40 at half size": _resaved,
    "hires, gamma 0.7": lambda image: image.point(lambda v: round(255 * (v / 255) ** 0.7)),
    "hires, auto-contrast (2 % cut)": lambda image: ImageOps.autocontrast(image, cutoff=2),
}
# Changes the fingerprint is not built to survive; measured so the card says how far they move it.
NOT_CAUGHT = {
    "hires, cropped 5 % a side": lambda image: image.crop(
        (image.width // 20, image.height // 20, image.width - image.width // 20, image.height - image.height // 20)
    ),
    "hires, rotated 3 degrees": lambda image: image.rotate(3, resample=Image.Resampling.BILINEAR),
    "hires, mirrored": ImageOps.mirror,
}


def _summary(distances: list[int]) -> dict:
    values = np.asarray(distances)
    return {
        "n": int(values.size),
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
        "matched": int((values <= fp.MATCH_MAX_BITS).sum()),
    }


def _patient(path: str, label: str, patient: str) -> str:
    number = re.search(r"IM-(\d+)", path)
    return f"normal:{number.group(1)}" if label == "NORMAL" and number else patient


def measure(model_dir: Path, data: Path, sample: int = 400, seed: int = 0) -> dict:
    known = fp.TrainingFingerprints.load(model_dir)
    if known is None:
        raise SystemExit(f"{model_dir} has no {fp.FILE_NAME}")
    rng = random.Random(seed)

    def nearest(hexes: list[str]) -> list[int]:
        return [known.nearest(h).distance for h in hexes]

    hires = sorted((data / "chest_xray_hires" / "train").rglob("*.jpeg"))
    chosen = rng.sample(hires, min(sample, len(hires)))
    members = {
        "originals (full resolution)": nearest(fingerprint_files(sorted((data / "originals").glob("*.jpeg")))),
        "hires copies (aspect kept)": nearest(fingerprint_files(chosen)),
    }
    changed = {}
    for name, transform in {**VARIANTS, **NOT_CAUGHT}.items():
        payloads = []
        for path in chosen[: sample // 2]:
            buffer = io.BytesIO()
            transform(Image.open(path).convert("L")).save(buffer, format="PNG")
            payloads.append(buffer.getvalue())
        (members if name in VARIANTS else changed)[name] = nearest(fingerprint_files(payloads))

    # Another patient's nearest training image: the same rows, one's own patient left out.
    manifest = {}
    with Path(json.loads((model_dir / "card.json").read_text())["training"]["manifest"]).open() as rows:
        for row in csv.DictReader(rows):
            manifest[row["path"]] = _patient(row["path"], row["label"], row["patient"])
    patients = np.array([manifest[name] for name in known.names])
    other_patient = []
    for i in range(len(known)):
        distances = known.distances_from(i)
        distances[patients == patients[i]] = fp.BITS
        other_patient.append(int(distances.min()))
    official_val = sorted((data / "chest_xray" / "val").rglob("*.jpeg"))
    others = {
        "training images of other patients (same hospital)": other_patient,
        "official val/ (not trained on)": nearest(fingerprint_files(official_val)),
        "adult_dev (adults, three sources)": nearest(fingerprint_files(sorted((data / "adult_dev").rglob("*.jpeg")))),
    }
    return {
        "command": "python -m ml.evaluation.fingerprint_check --model-dir ml/models/v5 --data ../shared/data",
        "match_max_bits": fp.MATCH_MAX_BITS,
        "training_films_refound": {name: _summary(d) for name, d in members.items()},
        "other_films": {name: _summary(d) for name, d in others.items()},
        "training_films_changed_beyond_reach": {name: _summary(d) for name, d in changed.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="../shared/data")
    parser.add_argument("--sample", type=int, default=400, help="hires training copies to re-find")
    parser.add_argument("--write-card", action="store_true", help="Store the figures in the card.")
    args = parser.parse_args(argv)
    figures = measure(args.model_dir, args.data, args.sample)
    print(json.dumps(figures, indent=2))
    if args.write_card:
        card_path = args.model_dir / "card.json"
        card = json.loads(card_path.read_text())
        card.setdefault("training_fingerprints", {})["measured"] = figures
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
