"""Which model the workers serve, read from its card (JSON) alone.

The web process asks this for the version it shows and records, and never
loads TensorFlow; the worker loads the model itself (``worker.loaded_models``).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)


def model_dir() -> Path:
    if settings.SCREENING_MODEL_DIR:
        return Path(settings.SCREENING_MODEL_DIR)
    from ml.serving.inference import current_model_dir

    return current_model_dir()


@functools.lru_cache(maxsize=4)
def _read_card(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def model_card() -> dict:
    """The served model's card, read again only when the file changes; ``{}`` (logged) when unreadable."""
    try:
        path = model_dir() / "card.json"
        return _read_card(str(path), path.stat().st_mtime)
    except (OSError, ValueError) as exc:
        log.warning("no readable model card: %s", exc)
        return {}


@functools.lru_cache(maxsize=2)
def _read_fingerprints(path: str, mtime: float):
    from ml.serving.fingerprint import TrainingFingerprints

    return TrainingFingerprints.load(Path(path).parent)


def training_fingerprints():
    """The served model's training fingerprints (``ml.serving.fingerprint``), or None when it ships none."""
    from ml.serving.fingerprint import FILE_NAME

    path = model_dir() / FILE_NAME
    try:
        return _read_fingerprints(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        return None


def current_model_version() -> str:
    """The version the workers serve; raises ``KeyError`` when the card cannot say (re-runs need a real answer)."""
    return str(model_card()["version"])
