"""Perceptual fingerprints: is this image one the model was trained, calibrated or selected on?

A site validation measured on the model's own training images says AUC 1.000
and talks a hospital into a threshold with no margin. So each model folder
ships the fingerprints of every image it learned from or was tuned on
(``training_fingerprints.txt``, written by ``ml.training.fingerprints``), and
the service fingerprints each validation case the same way.

The fingerprint is a 256-bit DCT hash (``imagehash.phash``, hash size 16) of
the model's own 224x224 input: the file decoded by ``ml.serving.decode`` and
squashed by ``ml.serving.preprocess``, exactly as the worker scores it. Hashing
what the model sees makes a full-resolution original, a re-saved JPEG, a
downscaled copy or a DICOM of a training film land next to the 224x224
training copy. Measured by ``python -m ml.evaluation.fingerprint_check`` (the
model card keeps the figures): training films re-found that way are within
12 bits (re-saved at JPEG quality 40 and half size), 14 (auto-contrast) and
24 (gamma 0.7); the nearest training film of *another* patient of the same
hospital is 38 bits away, adult films 66 or more. ``MATCH_MAX_BITS`` sits in
that gap. Crops, rotations and mirror images move the hash far (52, 38 and
more bits): they are not caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from ml.serving.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode
from ml.serving.preprocess import INPUT_SIZE, squash_to_input

HASH_SIZE = 16  # 16 x 16 DCT coefficients: 256 bits
BITS = HASH_SIZE * HASH_SIZE
MATCH_MAX_BITS = 24
FILE_NAME = "training_fingerprints.txt"
METHOD = (
    "imagehash.phash(hash_size=16), 256 bits, of the model's 224x224 input "
    "(ml.serving.decode + ml.serving.preprocess.squash_to_input)"
)


def fingerprint(pixels: np.ndarray) -> str:
    """The fingerprint of a model input (``(224, 224)`` uint8, from ``squash_to_input``), as 64 hex digits."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 model input, got {pixels.dtype} of shape {pixels.shape}")
    return str(imagehash.phash(Image.fromarray(pixels), hash_size=HASH_SIZE))


def fingerprint_of_file(source, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """A stored file's fingerprint, through the worker's decode and squash; raises as ``decode`` does."""
    decoded = decode(source, target_size=INPUT_SIZE, max_bytes=max_bytes, max_pixels=max_pixels)
    return fingerprint(squash_to_input(decoded.pixels, INPUT_SIZE))


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)  # set bits of each byte


def _packed(hexes: list[str]) -> np.ndarray:
    """(n, 32) uint8 rows of the hashes' bits, for XOR-and-count distances."""
    if not hexes:
        return np.zeros((0, BITS // 8), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hexes)), dtype=np.uint8).reshape(len(hexes), BITS // 8)


@dataclass(frozen=True)
class Match:
    distance: int  # bits that differ from the nearest training image
    training_image: str  # its path in the training manifest

    @property
    def is_training_image(self) -> bool:
        return self.distance <= MATCH_MAX_BITS


class TrainingFingerprints:
    """The fingerprints a model folder ships, with the nearest one to any other."""

    def __init__(self, hexes: list[str], names: list[str]):
        if len(hexes) != len(names):
            raise ValueError("one name per fingerprint")
        bad = [h for h in hexes if len(h) != BITS // 4]
        if bad:
            raise ValueError(f"a fingerprint must be {BITS // 4} hex digits, got {bad[0]!r}")
        self.names = names
        self._rows = _packed(hexes)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, model_dir: str | Path) -> TrainingFingerprints | None:
        """The folder's fingerprints, or None for a model that ships none (its cases cannot be checked)."""
        path = Path(model_dir) / FILE_NAME
        if not path.exists():
            return None
        hexes, names = [], []
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                value, _, name = line.partition(" ")
                hexes.append(value)
                names.append(name.strip())
        return cls(hexes, names)

    def nearest(self, hex_fingerprint: str) -> Match:
        if not self.names:
            return Match(BITS, "")
        distances = self.distances(hex_fingerprint)
        best = int(np.argmin(distances))
        return Match(int(distances[best]), self.names[best])

    def distances(self, hex_fingerprint: str) -> np.ndarray:
        """Bits that differ between ``hex_fingerprint`` and each training image, in file order."""
        return self._distances(_packed([hex_fingerprint])[0])

    def distances_from(self, index: int) -> np.ndarray:
        """Bits that differ between training image ``index`` and each training image (itself included: 0)."""
        return self._distances(self._rows[index])

    def _distances(self, row: np.ndarray) -> np.ndarray:
        return _POPCOUNT[np.bitwise_xor(self._rows, row)].sum(axis=1)


def write(path: str | Path, rows: list[tuple[str, str]], header: dict) -> None:
    """``training_fingerprints.txt``: a JSON header line, then ``<hex> <manifest path>`` per image."""
    lines = ["# " + json.dumps(header, sort_keys=True)]
    lines += [f"{value} {name}" for value, name in rows]
    Path(path).write_text("\n".join(lines) + "\n")
