"""Which model the workers serve: one answer for the worker and the web app.

Reads only the model card (JSON), so the web process never loads TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings


def model_dir() -> Path:
    if settings.SCREENING_MODEL_DIR:
        return Path(settings.SCREENING_MODEL_DIR)
    from ml.inference import current_model_dir

    return current_model_dir()


def current_model_version() -> str:
    return str(json.loads((model_dir() / "card.json").read_text())["version"])
