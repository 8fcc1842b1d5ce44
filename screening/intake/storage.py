"""Storing uploaded files so that a full or failing disk can never leave a damaged copy behind.

Files are content-addressed, so a file already at its path is reused by every
later upload of the same bytes. That makes a partial write poisonous: after a
disk-full error the truncated file would be trusted forever. So each file is
written to a temporary name beside its final path, synced, checked for its full
size and only then renamed into place (atomic on one filesystem), and the
folder is synced so that the new name survives a crash too; a file
already in place is verified (size and SHA-256) before it is reused, and
replaced if it does not match. Works on the filesystem storage the service
uses (``MEDIA_ROOT``).

A fresh copy is not hashed again: its bytes come from the upload's spool,
hashed as it was filled, and reading them back right after the write would
only read the page cache, not the disk. Without that second hash, ``submit()``
of 500 originals takes 0.38-0.41 s instead of 0.43-0.48 s (``bench.chunk``,
issue 14), and the CPU it frees goes to the workers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from django.core.files.storage import default_storage
from django.utils.translation import gettext_lazy

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class StorageUnavailable(Exception):
    """The file could not be written (disk full, read-only, I/O error); nothing of it was kept.

    Its message is for the person submitting and is never stored, so it is
    translated when shown (``str(exc)`` in the request's language).
    """

    message = gettext_lazy(
        "The service could not store the uploaded files (its storage is full or not writable). "
        "Nothing was kept; please try again later or tell an administrator."
    )


def matches(path: Path, sha256: str, size: int) -> bool:
    """True when ``path`` holds exactly ``size`` bytes whose SHA-256 is ``sha256``."""
    try:
        if path.stat().st_size != size:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def _touch(path: Path) -> bool:
    """Mark an existing file as just used; False when there is none.

    Housekeeping (``screening.intake.housekeeping``) removes only files untouched for
    its grace period, so an intact copy this upload is about to reuse cannot be
    taken away as an orphan before the upload's row commits.
    """
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:
        return path.exists()
    return True


def store_verified(name: str, source: BinaryIO, sha256: str, size: int, *, sync_name: bool = True) -> bool:
    """Put ``source`` at storage name ``name`` unless an intact copy is there; True when this call wrote it.

    Raises ``StorageUnavailable`` (with nothing left at ``name`` or beside it) when writing fails.
    ``sync_name=False`` leaves making the new name durable to the caller
    (``sync_folders``), which can then do it once for many files.
    """
    final = Path(default_storage.path(name))
    if _touch(final):
        if matches(final, sha256, size):
            return False
        log.warning("stored file %s is damaged (size or checksum differs); writing it again", name)
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("xb") as out:
            source.seek(0)
            shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
            if os.fstat(out.fileno()).st_size != size:
                raise OSError(f"the copy of {name} is not the size of what was uploaded")
        os.replace(partial, final)
    except OSError as exc:
        log.error("could not store %s: %s", name, exc)
        partial.unlink(missing_ok=True)
        raise StorageUnavailable(StorageUnavailable.message) from exc
    if sync_name:
        sync_folders([name])
    return True


def sync_folders(names: list[str]) -> None:
    """Make the names of freshly stored files durable: fsync the folders they are in and the ones above.

    Syncing a file makes its bytes durable, not its name: the rename into
    place, and the creation of a new ``studies/ab`` folder, are changes to
    folders, which a crash can lose until the file system next commits them.
    A study row or a C-STORE success that points at a lost name loses the
    study, so callers sync before they commit or answer. Raises
    ``StorageUnavailable``. Without directory handles (Windows) there is
    nothing to sync.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    folders = set()
    for name in names:
        folder = Path(default_storage.path(name)).parent
        folders.update((folder, folder.parent))
    try:
        for folder in sorted(folders):
            handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
    except OSError as exc:
        log.error("could not make the names of %d stored files durable: %s", len(names), exc)
        raise StorageUnavailable(StorageUnavailable.message) from exc


def remove(names: list[str]) -> None:
    """Best-effort removal of files this process just wrote, after the submission that needed them failed."""
    for name in names:
        try:
            Path(default_storage.path(name)).unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s after a failed submission", name)
