"""Display copies of studies for the browser: the image, and the heatmap over it.

Browsers cannot show DICOM, and a 3000-pixel 16-bit PNG is slow to ship, so
each study gets one 8-bit PNG rendered by the same decoder the model uses
(windowing, MONOCHROME1, EXIF orientation applied). It is cached next to the
originals by content hash and only ever served through a permission check.

Heatmap overlays are rendered the same way, when someone first looks: the
worker stores only the raw map and the salient box with each result (drawing
a PNG for every scored study cost a fifth of a worker's time, for images most
of which nobody opens). The overlay is a pure function of the stored map, so
the cached file never goes stale and the result row never changes.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image

from ml.serving.decode import decode
from ml.serving.heatmap import overlay_png
from screening.models import Result, Study

MAX_SIDE = 2048
PREVIEWS_FOLDER = "previews"


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a concurrent reader never sees half a file


def heatmap_file(result: Result, study: Study) -> Path | None:
    """Path of the result's overlay PNG, rendered from its stored map on first use; None when it has no map.

    ``study`` is the one whose image the overlay is drawn over (for a study
    that links to an earlier identical file, that file's study: same bytes).
    Results scored before overlays were rendered lazily name their PNG in
    ``Result.heatmap``; that file is served as it is.
    """
    if result.heatmap:
        stored = Path(settings.MEDIA_ROOT) / result.heatmap.name
        if stored.exists():
            return stored
    target = Path(settings.MEDIA_ROOT) / "heatmaps" / result.model_version / study.sha256[:2] / f"{study.sha256}.png"
    if target.exists():
        return target
    if result.heatmap_raw is None:
        return None
    box = tuple(result.salient_box) if result.salient_box else None
    png = overlay_png(
        np.asarray(result.heatmap_raw, dtype=np.float32), study.image_width or 224, study.image_height or 224, box
    )
    _write_atomically(target, png)
    return target


def preview_path(sha256: str) -> Path:
    """Where the display PNG of the file with this content lives (one per content, shared by its studies)."""
    return Path(settings.MEDIA_ROOT) / PREVIEWS_FOLDER / sha256[:2] / f"{sha256}.png"


def preview_file(study: Study) -> Path:
    """Path of the study's display PNG, rendered on first use. Raises ``UnscorableInput`` or ``OSError``."""
    target = preview_path(study.sha256)
    if target.exists():
        return target
    decoded = decode(
        study.file.path, max_bytes=settings.SCREENING_MAX_FILE_BYTES, max_pixels=settings.SCREENING_MAX_IMAGE_PIXELS
    )
    image = Image.fromarray(decoded.pixels)
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    _write_atomically(target, buffer.getvalue())
    return target
