"""Which Pillow filter makes a full-resolution file look most like its 224×224 training copy?

    python -m ml.evaluation.check_resampling --hires ../shared/data/chest_xray_hires/train \\
        --low ../shared/data/chest_xray/train [--every 3]

The training copies were squashed to 224×224 by a tool we do not have; serving
must reproduce that squash from whatever resolution arrives. This measures
the mean absolute grey-level difference between each filter's squash of the
hires file (decoded like the service does) and the 224 copy, which is how
``ml.serving.preprocess.RESAMPLE`` was chosen.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from ml.serving.preprocess import INPUT_SIZE
from ml.training.data import load_gray, scan_folder

FILTERS = ("NEAREST", "BOX", "BILINEAR", "HAMMING", "BICUBIC", "LANCZOS")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hires", required=True)
    parser.add_argument("--low", required=True)
    parser.add_argument("--every", type=int, default=1, help="use every n-th file")
    args = parser.parse_args(argv)

    records = scan_folder(args.hires)[:: args.every]
    errors: dict[str, list[float]] = {name: [] for name in FILTERS}
    for record in records:
        hires = Image.fromarray(load_gray(f"{args.hires}/{record.path}"))
        with Image.open(f"{args.low}/{record.path}") as low_file:
            low = np.asarray(low_file.convert("L"), np.float64)
        for name in FILTERS:
            squashed = hires.resize((INPUT_SIZE, INPUT_SIZE), getattr(Image.Resampling, name))
            errors[name].append(float(np.abs(np.asarray(squashed, np.float64) - low).mean()))
    print(f"{len(records)} files; mean |grey difference| to the 224 copy (0-255 scale):")
    for name in sorted(FILTERS, key=lambda n: np.mean(errors[n])):
        print(f"  {name:9s} mean {np.mean(errors[name]):.3f}  median {np.median(errors[name]):.3f}")


if __name__ == "__main__":
    main()
