"""Display copies of studies for the browser.

Browsers cannot show DICOM, and a 3000-pixel 16-bit PNG is slow to ship, so
each study gets one 8-bit PNG rendered by the same decoder the model uses
(windowing, MONOCHROME1, EXIF orientation applied). It is cached next to the
originals by content hash and only ever served through a permission check.
"""

from __future__ import annotations

import io
from pathlib import Path

from django.conf import settings
from PIL import Image

from ml.serving.decode import decode
from screening.models import Study

MAX_SIDE = 2048


def preview_file(study: Study) -> Path:
    """Path of the study's display PNG, rendered on first use. Raises ``UnscorableInput`` or ``OSError``."""
    target = Path(settings.MEDIA_ROOT) / "previews" / study.sha256[:2] / f"{study.sha256}.png"
    if target.exists():
        return target
    decoded = decode(
        study.file.path, max_bytes=settings.SCREENING_MAX_FILE_BYTES, max_pixels=settings.SCREENING_MAX_IMAGE_PIXELS
    )
    image = Image.fromarray(decoded.pixels)
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)  # atomic: a concurrent reader never sees half a file
    return target
