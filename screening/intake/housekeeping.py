"""Scheduled housekeeping of stored files: orphans removed, originals past retention purged.

A web process killed mid-upload, or a submission whose rows never commit,
leaves content-addressed originals (``studies/ab/<sha>.<ext>``), display
copies (``previews/ab/<sha>.png``) and unfinished ``.part`` writes that no
study refers to; nothing else would ever remove them, and they are patient
data. Beat runs :func:`run` every ``SCREENING_HOUSEKEEPING_SECONDS``.

Why a file is safe to remove: it is older than
``SCREENING_ORPHAN_GRACE_SECONDS`` (an upload or a DICOM association in
flight wrote or re-verified it recently: ``storage.store_verified`` touches an
intact copy before reusing it) and no study that still has its original
points at it. A concurrent upload can still reuse a file between that check
and the unlink, so the file is first renamed aside, and put back if its
modification time shows it was touched in between (a rename keeps it).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from screening import audit, counters
from screening.intake.previews import PREVIEWS_FOLDER
from screening.intake.retention import purge_originals
from screening.intake.submission import STUDIES_FOLDER
from screening.models import AuditEvent, Study

log = logging.getLogger(__name__)

ASIDE_SUFFIX = ".orphan"


@dataclass
class OrphanOutcome:
    files: int = 0
    partials: int = 0
    bytes: int = 0

    @property
    def removed(self) -> int:
        return self.files + self.partials


def _old_files(root: Path, cutoff: float):
    """(path, size, is_partial) of files under ``root``'s two-level fan-out last modified before ``cutoff``."""
    if not root.is_dir():
        return
    for folder in os.scandir(root):
        if not folder.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(folder.path):
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            if stat.st_mtime < cutoff:
                partial = entry.name.startswith(".") and (
                    entry.name.endswith(".part") or entry.name.endswith(ASIDE_SUFFIX)
                )
                yield Path(entry.path), stat.st_size, partial


def _still_needed(field: str, values: list[str]) -> set[str]:
    """Those of ``values`` (storage names for ``file``, contents for ``sha256``) a study with its original holds."""
    needed: set[str] = set()
    for start in range(0, len(values), 500):
        studies = Study.objects.filter(**{f"{field}__in": values[start : start + 500]}, file_purged_at__isnull=True)
        needed.update(studies.values_list(field, flat=True))
    return needed


def _remove_unless_touched(path: Path, cutoff: float) -> bool:
    """Rename ``path`` aside, then remove it unless it was touched after ``cutoff`` (then put it back)."""
    aside = path.with_name(f".{path.name}{ASIDE_SUFFIX}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if aside.stat().st_mtime >= cutoff:
            os.rename(aside, path)  # an upload re-verified it meanwhile: it is needed again
            return False
        aside.unlink()
    except OSError:
        log.warning("could not remove the orphaned file %s", path)
        return False
    return True


def remove_orphans(grace_seconds: int | None = None, *, dry_run: bool = False) -> OrphanOutcome:
    """Remove stored files no study refers to, older than the grace period; what was (or would be) removed."""
    grace = settings.SCREENING_ORPHAN_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = time.time() - grace
    media = Path(settings.MEDIA_ROOT)
    outcome = OrphanOutcome()

    originals = list(_old_files(media / STUDIES_FOLDER, cutoff))
    names = {
        f"{STUDIES_FOLDER}/{path.parent.name}/{path.name}": (path, size)
        for path, size, partial in originals
        if not partial
    }
    needed = _still_needed("file", sorted(names))
    candidates = [(path, size, False) for name, (path, size) in names.items() if name not in needed]
    candidates += [(path, size, True) for path, size, partial in originals if partial]

    previews = list(_old_files(media / PREVIEWS_FOLDER, cutoff))
    by_sha = {path.stem: (path, size) for path, size, partial in previews if not partial}
    needed_shas = _still_needed("sha256", sorted(by_sha))
    candidates += [(path, size, False) for sha, (path, size) in by_sha.items() if sha not in needed_shas]
    candidates += [(path, size, True) for path, size, partial in previews if partial]

    for path, size, partial in candidates:
        if dry_run:
            removed = True
        elif partial:
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                removed = False
        else:
            removed = _remove_unless_touched(path, cutoff)
        if removed:
            outcome.bytes += size
            if partial:
                outcome.partials += 1
            else:
                outcome.files += 1
    if outcome.removed and not dry_run:
        with transaction.atomic():
            audit.record(
                AuditEvent.Action.ORPHANS_REMOVED,
                files=outcome.files,
                partial_writes=outcome.partials,
                bytes=outcome.bytes,
                grace_seconds=grace,
            )
            counters.add(counters.ORPHAN_FILES_REMOVED, outcome.removed)
            counters.add(counters.ORPHAN_BYTES_REMOVED, outcome.bytes)
        log.info("housekeeping: removed %d orphaned files and %d unfinished writes", outcome.files, outcome.partials)
    return outcome


def run() -> dict:
    """One scheduled round: orphans, then the retention purge when ``SCREENING_RETENTION_DAYS`` is set."""
    orphans = remove_orphans()
    summary = {"orphan_files": orphans.files, "orphan_partial_writes": orphans.partials}
    if settings.SCREENING_RETENTION_DAYS:
        purged = purge_originals(settings.SCREENING_RETENTION_DAYS, scheduled=True)
        summary.update(purged_studies=purged.studies, purged_files=purged.files)
    return summary
