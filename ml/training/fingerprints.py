"""Write a model folder's training fingerprints and name them in its card.

Every image of the training manifest goes in, whatever its role: the model
learned from ``train`` and was selected (epoch, threshold rule) and
calibrated on ``val``, so a site validation must not count either.

    python -m ml.training.fingerprints --model-dir ml/models/v5 \
        --manifest ml/splits/v1.csv --data ../shared/data/chest_xray

Each image goes through ``ml.serving.pipeline.prepare``, the worker's own
decode and squash, so the service's fingerprints of the same film agree.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

from ml.serving import fingerprint as fp
from ml.serving.pipeline import PreparedImage, prepare_many


def fingerprint_files(paths: list[Path], threads: int = 2) -> list[str]:
    """Fingerprints of ``paths`` in order; a file the worker could not read is an error here."""
    prepared = prepare_many(paths, threads=threads)
    hexes = []
    for path, outcome in zip(paths, prepared, strict=True):
        if not isinstance(outcome, PreparedImage):
            raise ValueError(f"{path}: {outcome}")
        hexes.append(fp.fingerprint(outcome.pixels))
    return hexes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True, help="The training manifest (path, ..., role).")
    parser.add_argument("--data", type=Path, required=True, help="The folder the manifest's paths are under.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    with args.manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["path"] for row in rows]
    hexes = fingerprint_files([args.data / name for name in names], threads=args.threads)
    roles = sorted({row.get("role", "") for row in rows})
    header = {
        "method": fp.METHOD,
        "manifest": str(args.manifest),
        "manifest_sha256": hashlib.sha256(args.manifest.read_bytes()).hexdigest(),
        "images": len(rows),
        "roles": roles,
    }
    out = args.model_dir / fp.FILE_NAME
    fp.write(out, list(zip(hexes, names, strict=True)), header)

    per_role = ", ".join(f"{role}: {sum(row.get('role', '') == role for row in rows)}" for role in roles)
    card_path = args.model_dir / "card.json"
    card = json.loads(card_path.read_text())
    entry = card.get("training_fingerprints", {})
    entry.update(
        {
            "file": fp.FILE_NAME,
            "file_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "method": fp.METHOD,
            "match_max_bits": fp.MATCH_MAX_BITS,
            "images": len(rows),
            "covers": (
                f"every image of {args.manifest} ({per_role}): trained on, or used to pick the epoch, "
                "fit the calibration and choose the threshold"
            ),
        }
    )
    card["training_fingerprints"] = entry
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"{len(rows)} fingerprints -> {out}")


if __name__ == "__main__":
    main()
