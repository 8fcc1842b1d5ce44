"""What the in-browser preview's export depends on, so that a server can tell whether it still matches.

``python -m ml.training.export_browser`` writes this into the export's
manifest; the web process (``screening.web.browser_preview``) computes it again
for the models it serves and offers the preview only when the two agree.
It covers the weight files (by sha256) and the card values the browser uses,
not whole cards: a card's prose, metrics or history may change without the
preview's numbers changing. No TensorFlow here; reading is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ml.serving import gate, population_check

WEIGHT_FILES = {
    "model": ("model.keras",),
    "gate": (gate.BACKBONE_FILE, gate.PARAMS_FILE),
    "population": (population_check.PARAMS_FILE,),
}
# The card values the browser's arithmetic reads (ml.training.export_browser copies them into model.json).
CARD_FIELDS = {
    "model": ("version", "input_size", "threshold", "temperature", "bias", "calibration_prevalence"),
    "gate": ("version", "resolution", "head", "thresholds"),
    "population": ("version", "gate_version", "threshold_logit"),
}


def sha256_file(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dependencies(
    model_dir: str | os.PathLike,
    gate_dir: str | os.PathLike = gate.DEFAULT_GATE_DIR,
    population_dir: str | os.PathLike = population_check.DEFAULT_DIR,
    digest: Callable[[Path], str] = sha256_file,
) -> dict:
    """``{part: {"files": {name: sha256}, "card": {field: value}}}`` for the model, gate and population check.

    ``digest`` lets a long-running process cache file hashes.
    """
    folders = {"model": Path(model_dir), "gate": Path(gate_dir), "population": Path(population_dir)}
    result = {}
    for part, folder in folders.items():
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        result[part] = {
            "files": {name: digest(folder / name) for name in WEIGHT_FILES[part]},
            "card": {field: card.get(field) for field in CARD_FIELDS[part]},
        }
    return result
