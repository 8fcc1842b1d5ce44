"""What the submit page needs to score chosen files in the browser before the server does (issue 16).

The browser runs the export written by ``python -m ml.training.export_browser``
(``webapp/static/preview/``). A preview that disagreed with the server would be
worse than none, so the page offers one only when that export was made from
the very files the workers serve: the served model folder (``SCREENING_MODEL_DIR``
or ``ml/models/CURRENT``), the gate and the population check, compared by
sha256 (cached per file until it changes). The site's adopted operating point
travels with the page, so the preview's label and shown probability follow it
as the study page's will.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from django.conf import settings
from django.templatetags.static import static

from ml.serving.browser_export import dependencies, sha256_file
from ml.serving.calibration import logit
from screening import served_model
from screening.population import validated_range
from screening.selectors import current_site_setting

log = logging.getLogger(__name__)

EXPORT_DIR = Path(settings.BASE_DIR) / "webapp" / "static" / "preview"
TFJS_SCRIPTS = ("vendor/tfjs/tf-core.es2017.min.js", "vendor/tfjs/tf-backend-cpu.es2017.min.js")


@functools.lru_cache(maxsize=32)
def _sha256(path: str, mtime: float, size: int) -> str:
    return sha256_file(path)


def _digest(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_mtime, stat.st_size)


@functools.lru_cache(maxsize=4)
def _manifest(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def export_mismatch() -> str | None:
    """Why the browser export is not the served models (for the log), or None when it is."""
    path = EXPORT_DIR / "manifest.json"
    try:
        manifest = _manifest(str(path), path.stat().st_mtime)
        served = dependencies(served_model.model_dir(), digest=_digest)
        for part, values in served.items():
            if manifest["depends_on"][part] != values:
                return f"the browser export's {part} is not the served one"
    except (OSError, ValueError, KeyError) as exc:
        return f"no usable browser export ({type(exc).__name__})"
    return None


@functools.lru_cache(maxsize=8)
def _warn_once(reason: str) -> None:
    """Once per process and reason: the submit page is rendered often, the cause changes rarely."""
    log.warning("in-browser preview off: %s (run python -m ml.training.export_browser)", reason)


def page_config() -> dict:
    """The JSON the submit page's preview script reads (``preview-config``)."""
    mismatch = export_mismatch()
    if mismatch is not None:
        _warn_once(mismatch)
        return {"enabled": False}
    manifest = _manifest(str(EXPORT_DIR / "manifest.json"), (EXPORT_DIR / "manifest.json").stat().st_mtime)
    card = served_model.model_card()
    setting = current_site_setting(str(card.get("version", "")))
    shift = None
    if setting is not None and setting.prevalence is not None and card.get("calibration_prevalence") is not None:
        shift = float(logit(setting.prevalence) - logit(float(card["calibration_prevalence"])))
    ages = validated_range(card)
    version = manifest["export_id"]
    return {
        "enabled": True,
        "exportId": version,
        "scripts": [static(name) for name in TFJS_SCRIPTS],
        "engineUrl": static("js/preview-engine.js"),
        "workerUrl": static("js/preview-worker.js"),
        "modelUrl": f"{static('preview/model.json')}?v={version}",
        "weightsUrl": f"{static('preview/weights.bin')}?v={version}",
        "threshold": float(card["threshold"] if setting is None else setting.threshold),
        "prevalenceShift": shift,
        "maxBytes": settings.SCREENING_MAX_FILE_BYTES,
        "maxPixels": settings.SCREENING_MAX_IMAGE_PIXELS,
        # Declared ages the server holds validated: youngest <= age < oldest + 1 (``AgeRange.holds``).
        "ages": [ages.youngest, ages.oldest + 1],
    }
