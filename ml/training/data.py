"""Reading the Kermany chest X-ray layout: file names, labels, patients, pixels.

Patient identity is the whole point of this module: several patients have more
than one image (and 24 groups are byte-identical), so any split, bootstrap or
cross-validation must group by patient, never by image. Keys are deliberately
conservative (see the data card): normal ``IM-N`` and ``NORMAL2-IM-N`` are
keyed by N alone because nobody documents whether they are the same child, and
``person N_bacteria`` / ``person N_virus`` are different children.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.decode import decode
from ml.serving.preprocess import INPUT_SIZE, squash_to_input

LABELS = ("NORMAL", "PNEUMONIA")  # index = class id: 1 means pneumonia
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

# IM-0115-0001.jpeg, IM-0497-0001-0002.jpeg, NORMAL2-IM-0516-0001.jpeg
_NORMAL_NAME = re.compile(r"^(?:NORMAL2-)?IM-(\d+)-\d+(?:-\d+)?$", re.IGNORECASE)
# person1010_bacteria_2941.jpeg, person482_virus_984.jpeg
_PNEUMONIA_NAME = re.compile(r"^person(\d+)_(bacteria|virus)_\d+(?:_\d+)?$", re.IGNORECASE)
# originals/ carry the label as a prefix: NORMAL__IM-0115-0001.jpeg
_LABEL_PREFIX = re.compile(r"^(?:NORMAL|PNEUMONIA)__", re.IGNORECASE)


@dataclass(frozen=True)
class NameInfo:
    """What a Kermany file name says: label, subtype and the patient it belongs to."""

    label: str  # NORMAL or PNEUMONIA
    subtype: str  # normal, bacteria or virus
    patient: str  # conservative patient key, e.g. "normal:115", "virus:482"


@dataclass(frozen=True)
class ImageRecord:
    path: str  # relative to the data root, with forward slashes
    label: str
    subtype: str | None  # None when the file name does not follow the Kermany scheme
    patient: str  # falls back to the file stem, i.e. one patient per image

    @property
    def target(self) -> int:
        return LABELS.index(self.label)


def parse_name(file_name: str) -> NameInfo | None:
    """Parse a Kermany file name; None for names outside the scheme."""
    stem = _LABEL_PREFIX.sub("", Path(file_name).stem)
    if match := _NORMAL_NAME.match(stem):
        return NameInfo("NORMAL", "normal", f"normal:{int(match.group(1))}")
    if match := _PNEUMONIA_NAME.match(stem):
        subtype = match.group(2).lower()
        return NameInfo("PNEUMONIA", subtype, f"{subtype}:{int(match.group(1))}")
    return None


def scan_folder(root: str | os.PathLike) -> list[ImageRecord]:
    """List every image under ``root/NORMAL`` and ``root/PNEUMONIA``, sorted by path.

    The folder decides the label (that is how external test sets arrive); the
    file name only adds subtype and patient when it follows the Kermany scheme.
    A name that contradicts its folder is an error, not something to guess about.
    """
    root = Path(root)
    records = []
    for label in LABELS:
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            info = parse_name(path.name)
            if info is not None and info.label != label:
                raise ValueError(f"{path}: file name says {info.label} but it is filed under {label}")
            records.append(
                ImageRecord(
                    path=path.relative_to(root).as_posix(),
                    label=label,
                    subtype=info.subtype if info else None,
                    patient=info.patient if info else f"file:{path.relative_to(root).as_posix()}",
                )
            )
    if not records:
        raise FileNotFoundError(f"no images under {root}/NORMAL or {root}/PNEUMONIA")
    return records


def load_gray(path: str | os.PathLike, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode a file to 8-bit grey pixels exactly as the service does (``ml.serving.decode``).

    Training, evaluation and serving must see the same pixels, so this is a
    thin wrapper: colour becomes luma, 16-bit data is scaled through its bit
    depth, large JPEGs may be decoded at reduced scale (never below 3× ``size``).
    """
    return decode(path, target_size=size).pixels


def load_input(path: str | os.PathLike, size: int = INPUT_SIZE) -> np.ndarray:
    """The model input for one file: decoded, grey, squashed to ``size``×``size``, uint8."""
    return squash_to_input(load_gray(path, size), size)


def load_inputs(
    root: str | os.PathLike, records: list[ImageRecord], size: int = INPUT_SIZE, workers: int = 2
) -> np.ndarray:
    """Decode ``records`` into an ``(N, size, size)`` uint8 array (Pillow releases the GIL)."""
    root = Path(root)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda record: load_input(root / record.path, size), records))
    return np.stack(images) if images else np.zeros((0, size, size), np.uint8)
