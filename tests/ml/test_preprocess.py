"""One preprocessing path for every input: sizes, colour modes and bit depths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.serving.preprocess import INPUT_SIZE, squash_to_input
from ml.training.data import load_gray, load_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NORMAL_224 = FIXTURES / "xray" / "NORMAL" / "IM-0115-0001.jpeg"


@pytest.mark.parametrize("path", sorted((FIXTURES / "originals").glob("*.jpeg")) + [NORMAL_224])
def test_real_files_of_any_size_become_224_uint8(path):
    with Image.open(path) as image:
        original_size = image.size
    array = load_input(path)
    assert array.shape == (INPUT_SIZE, INPUT_SIZE)
    assert array.dtype == np.uint8
    assert array.std() > 10  # an X-ray, not a blank image
    if path.parent.name == "originals":
        assert min(original_size) > INPUT_SIZE  # the originals really are larger than the input


def test_squash_ignores_aspect_ratio_instead_of_cropping():
    wide = np.zeros((100, 300), np.uint8)
    wide[:, :100] = 255  # left third white
    out = squash_to_input(wide)
    assert out.shape == (224, 224)
    # Squashing keeps the white third as the left third; a centre crop would lose it.
    assert out[:, :70].mean() > 250
    assert out[:, 80:].mean() < 5


def test_rgb_file_scores_like_its_grey_version(tmp_path):
    grey = Image.open(NORMAL_224).convert("L")
    grey.convert("RGB").save(tmp_path / "rgb.png")
    grey.save(tmp_path / "grey.png")
    assert Image.open(tmp_path / "rgb.png").mode == "RGB"
    diff = np.abs(load_input(tmp_path / "rgb.png").astype(int) - load_input(tmp_path / "grey.png").astype(int))
    assert diff.max() <= 1


def test_16_bit_png_gives_the_same_input_as_its_8_bit_original(tmp_path):
    grey = np.asarray(Image.open(NORMAL_224).convert("L"), np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "deep.png")  # uint16: 0..65535
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    # Pillow's plain convert("L") would clip this to white; the shared decoder scales it back.
    np.testing.assert_array_equal(load_input(tmp_path / "deep.png"), grey.astype(np.uint8))


def test_12_bit_png_is_scaled_not_left_dark(tmp_path):
    grey = np.asarray(Image.open(NORMAL_224).convert("L"), np.uint16)
    Image.fromarray(grey * 16).save(tmp_path / "12bit.png")  # 0..4080: 12-bit data in a 16-bit file
    loaded = load_gray(tmp_path / "12bit.png")
    assert loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - grey.astype(int)).max() <= 1


def test_grey_with_alpha_is_accepted(tmp_path):
    Image.open(NORMAL_224).convert("LA").save(tmp_path / "la.png")
    assert load_input(tmp_path / "la.png").shape == (224, 224)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((10, 10, 3), np.uint8), "2-D"),
        (np.zeros((10, 10), np.float32), "uint8"),
        (Image.new("RGB", (10, 10)), "mode L"),
    ],
)
def test_squash_rejects_what_is_not_8_bit_grey(bad, message):
    with pytest.raises(ValueError, match=message):
        squash_to_input(bad)
