"""The served model's score distribution on its own validation split, kept in the card as a drift reference.

Monitoring in use (``screening.governance.monitoring``) compares the scores a site sees
with a reference by the population stability index. A site that adopted an
operating point compares with its own validation; until then the reference is
this one: P(pneumonia), as the service writes it, of the validation role of
the training manifest, in ten equal-width bins.

    python -m ml.evaluation.score_reference --model ml/models/v5 \
        --data ../shared/data/chest_xray --manifest ml/splits/v1.csv --role val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ml.statistics.metrics import BINS, shares


def main(argv: list[str] | None = None) -> None:
    from ml.evaluation.evaluate import _keep_manifest_role
    from ml.serving.inference import Screener
    from ml.training.data import load_inputs, scan_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--role", default="val")
    args = parser.parse_args(argv)

    screener = Screener.load(args.model)
    records = _keep_manifest_role(scan_folder(args.data), args.manifest, args.role)
    probability, _ = screener.probabilities(load_inputs(args.data, records, screener.input_size))
    reference = {
        "what": f"P(pneumonia) of the {len(records)} images of role {args.role!r} in {args.manifest}",
        "command": (
            f"python -m ml.evaluation.score_reference --model {args.model} --data {args.data} "
            f"--manifest {args.manifest} --role {args.role}"
        ),
        "n": len(records),
        "bins": BINS,
        "shares": [round(v, 6) for v in shares(probability)],
    }
    card_path = args.model / "card.json"
    card = json.loads(card_path.read_text())
    card["score_reference"] = reference
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(reference, indent=2))


if __name__ == "__main__":
    main()
