"""Fingerprints find the model's training films however they were re-saved, and only those."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.serving.fingerprint import BITS, MATCH_MAX_BITS, TrainingFingerprints, fingerprint, fingerprint_of_file
from ml.serving.inference import current_model_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRAINING_FILMS = sorted((FIXTURES / "xray").rglob("*.jpeg")) + sorted((FIXTURES / "originals").glob("*.jpeg"))
ADULT_FILMS = sorted((FIXTURES / "adult").glob("*.jpeg"))


@pytest.fixture(scope="module")
def shipped():
    known = TrainingFingerprints.load(current_model_dir())
    assert known is not None
    assert len(known) == 5216
    return known


def resaved(path: Path, scale: float, quality: int) -> bytes:
    image = Image.open(path).convert("L")
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_the_fixture_films_are_found_among_the_shipped_training_fingerprints(shipped):
    for path in TRAINING_FILMS:
        match = shipped.nearest(fingerprint_of_file(path))
        assert match.is_training_image, (path.name, match)
        assert match.training_image.rsplit("/", 1)[-1].startswith(path.name.split("__")[-1][:8])


def test_a_resaved_downscaled_copy_is_still_found(shipped):
    for path in TRAINING_FILMS:
        assert shipped.nearest(fingerprint_of_file(resaved(path, 0.6, 50))).is_training_image


def test_films_the_model_never_saw_are_far_from_every_training_image(shipped):
    for path in ADULT_FILMS:
        assert shipped.nearest(fingerprint_of_file(path)).distance > 2 * MATCH_MAX_BITS


def test_a_fingerprint_needs_the_models_input_and_a_folder_without_fingerprints_has_none(tmp_path):
    assert len(fingerprint(np.zeros((224, 224), dtype=np.uint8))) == BITS // 4
    with pytest.raises(ValueError, match="2-D uint8"):
        fingerprint(np.zeros((224, 224, 3), dtype=np.uint8))
    assert TrainingFingerprints.load(tmp_path) is None
    with pytest.raises(ValueError, match="64 hex digits"):
        TrainingFingerprints(["abc"], ["x"])
