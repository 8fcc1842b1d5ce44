"""The first layer of defence: what may enter the system at all.

Every uploaded file, zip member or folder file becomes an ``Incoming`` (with
its content spooled to a temporary file and hashed) or a ``Refusal`` with a
sentence for the person who sent it. Refused files never get a study row; the
rest of the batch goes on. Content is judged by its bytes, never by its name,
and names from archives are only ever displayed, never used as paths.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings

from ml.serving.decode import sniff_format

_COPY_CHUNK = 1024 * 1024
# A spooled file smaller than this stays in memory (a chest film is 0.1-10 MB); creating a
# temporary file on disk for each was a quarter of a 500-file submission's time. At most a
# few spools are open at once (``submission._Storer`` holds eight), so memory stays bounded.
_SPOOL_IN_MEMORY_BYTES = 4 * 1024 * 1024
_SNIFF_BYTES = 4096
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_SKIPPED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class Incoming:
    """A file that passed the upload checks, spooled (in memory when small, else to disk) and hashed."""

    name: str
    format: str
    sha256: str
    size: int
    spool: BinaryIO  # positioned at 0; closed by the caller


@dataclass(frozen=True)
class Refusal:
    name: str
    error: str

    def as_dict(self) -> dict[str, str]:
        """How every answer (API, web page, upload report, CLI) shows a refused file."""
        return {"file": self.name, "error": self.error}


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_files: int
    max_zip_uncompressed_bytes: int
    max_zip_ratio: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_file_bytes=settings.SCREENING_MAX_FILE_BYTES,
            max_files=settings.SCREENING_MAX_BATCH_FILES,
            max_zip_uncompressed_bytes=settings.SCREENING_MAX_ZIP_UNCOMPRESSED_BYTES,
            max_zip_ratio=settings.SCREENING_MAX_ZIP_RATIO,
        )


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _spool(source: BinaryIO, name: str, limits: Limits) -> Incoming | Refusal:
    """Copy ``source`` to a temporary file, hashing it and enforcing the size limit as it goes.

    The limit is enforced on the bytes actually read, so a zip member whose
    header understates its size is still stopped.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - handed to the caller
    digest = hashlib.sha256()
    size = 0
    head = b""
    while chunk := source.read(_COPY_CHUNK):
        size += len(chunk)
        if size > limits.max_file_bytes:
            spool.close()
            return Refusal(name, f"File is larger than the {_megabytes(limits.max_file_bytes)} limit.")
        if len(head) < _SNIFF_BYTES:
            head += chunk[: _SNIFF_BYTES - len(head)]
        digest.update(chunk)
        spool.write(chunk)
    if size == 0:
        spool.close()
        return Refusal(name, "File is empty.")
    if _is_zip(head):  # top-level archives are expanded before this; only a nested one gets here
        spool.close()
        return Refusal(name, "Archives inside archives are not accepted; upload the inner zip itself.")
    kind = sniff_format(head)
    if kind is None:
        spool.close()
        return Refusal(name, "Not a JPEG, PNG or DICOM file (judged by its content, not its name).")
    spool.seek(0)
    return Incoming(name=name, format=kind, sha256=digest.hexdigest(), size=size, spool=spool)


def _is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def _unsafe_member_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name).parts


def _skippable(name: str) -> bool:
    path = PurePosixPath(name)
    return path.name in _SKIPPED_NAMES or path.name.startswith("._") or "__MACOSX" in path.parts


def _expand_zip(
    archive: BinaryIO, archive_name: str, limits: Limits, budget: list[int]
) -> Iterator[Incoming | Refusal]:
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError):
        yield Refusal(archive_name, "Zip archive is damaged and cannot be opened.")
        return
    with bundle:
        members = [info for info in bundle.infolist() if not info.is_dir() and not _skippable(info.filename)]
        declared = sum(info.file_size for info in members)
        if declared > limits.max_zip_uncompressed_bytes:
            yield Refusal(
                archive_name,
                f"Zip archive would expand to {_megabytes(declared)}, over the "
                f"{_megabytes(limits.max_zip_uncompressed_bytes)} limit; split it into smaller archives.",
            )
            return
        expanded = 0
        for info in members:
            display = f"{archive_name}/{info.filename}"[:255]
            if _unsafe_member_name(info.filename):
                yield Refusal(display, "Unsafe path inside the zip archive (absolute or containing '..').")
                continue
            if info.flag_bits & 0x1:
                yield Refusal(display, "File is encrypted inside the zip archive.")
                continue
            if info.compress_size and info.file_size / info.compress_size > limits.max_zip_ratio:
                yield Refusal(display, "Compression ratio is implausibly high (possible zip bomb); file skipped.")
                continue
            if budget[0] <= 0:
                yield Refusal(display, f"Batch limit of {limits.max_files} files reached; file not accepted.")
                continue
            budget[0] -= 1
            try:
                with bundle.open(info) as member:
                    outcome = _spool(member, display, limits)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
                yield Refusal(display, "File inside the zip archive is damaged and cannot be extracted.")
                continue
            if isinstance(outcome, Incoming):
                expanded += outcome.size
                if expanded > limits.max_zip_uncompressed_bytes:
                    outcome.spool.close()
                    yield Refusal(display, "Zip archive expands beyond the size limit; remaining files skipped.")
                    return
            yield outcome


def expand(sources: Iterable[tuple[str, BinaryIO]], limits: Limits) -> Iterator[Incoming | Refusal]:
    """Turn uploaded files (a zip counts as its members) into accepted or refused files.

    ``sources`` yields ``(display name, binary file object)``; it is consumed lazily.
    """
    budget = [limits.max_files]
    for name, handle in sources:
        name = (name or "unnamed")[:255]
        head = handle.read(8)
        handle.seek(0)
        if _is_zip(head):
            yield from _expand_zip(handle, name, limits, budget)
            continue
        if budget[0] <= 0:
            yield Refusal(name, f"Batch limit of {limits.max_files} files reached; file not accepted.")
            continue
        budget[0] -= 1
        yield _spool(handle, name, limits)


def folder_sources(root: Path) -> Iterator[tuple[str, BinaryIO]]:
    """Every regular file under ``root`` (sorted, hidden files skipped), named relative to it."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for filename in sorted(files):
            if filename.startswith(".") or filename in _SKIPPED_NAMES:
                continue
            path = Path(directory) / filename
            if not path.is_file() or path.is_symlink():
                continue
            with path.open("rb") as handle:
                yield str(path.relative_to(root)), handle
