"""The population check: shipped parameters load, children pass, bad input fails loudly.

Committed fixtures only (no ../shared); adult rates are measured by
``python -m ml.training.population_fit`` and written to the card, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.serving.gate import ChestXrayGate
from ml.serving.population_check import DEFAULT_DIR, PopulationCheck
from ml.training.gate_fit import load_input

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Children aged 1-5 from the training hospital: the 224 px copies and two full-resolution originals.
CHILD_FILES = sorted((FIXTURES / "xray").rglob("*.jpeg")) + sorted((FIXTURES / "originals").glob("*.jpeg"))


@pytest.fixture(scope="module")
def check(served_population_check) -> PopulationCheck:
    return served_population_check


@pytest.fixture(scope="module")
def gate(served_gate) -> ChestXrayGate:
    return served_gate


def test_shipped_params_load_and_match_the_gate(check, gate):
    assert check.version == DEFAULT_DIR.name
    assert check.gate_version == gate.version
    assert check.width == 1280
    assert np.isfinite(check.threshold_logit)


def test_fixture_children_are_not_flagged(check, gate):
    images = np.stack([load_input(p) for p in CHILD_FILES])
    s = gate.scores(images)
    assert s["features"].shape == (len(images), check.width)
    probability = check.adult_probability(s["features"])
    assert probability.shape == (len(images),)
    assert np.all((probability >= 0) & (probability <= 1))
    assert not check.flag(s["features"]).any(), dict(
        zip([p.name for p in CHILD_FILES], probability.round(3), strict=False)
    )


def test_gate_features_come_from_the_same_pass_as_its_verdicts(gate):
    images = np.stack([load_input(p) for p in CHILD_FILES[:3]])
    s = gate.scores(images)
    assert gate.verdicts(s) == gate.check(images)
    np.testing.assert_allclose(s["features"], gate.features(images), rtol=1e-5, atol=1e-6)
    assert gate.features(np.zeros((0, 224, 224), np.uint8)).shape == (0, 1280)


def test_flag_is_the_threshold_on_the_logit(check):
    features = np.random.default_rng(0).uniform(0, 6, size=(5, check.width)).astype(np.float32)
    logit = check.logit(features)
    np.testing.assert_array_equal(check.flag(features), logit >= check.threshold_logit)
    np.testing.assert_allclose(check.adult_probability(features), 1 / (1 + np.exp(-logit)))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 256), np.float32),  # not the gate's width
        np.zeros(1280, np.float32),  # one image must still be a batch
        np.zeros((1, 1280), np.uint8),  # pixels, not features
        np.full((1, 1280), np.nan, np.float32),
        [[0.0] * 1280],  # not an array
    ],
)
def test_bad_features_raise_a_clear_error(check, bad):
    with pytest.raises(ValueError, match="features must"):
        check.adult_probability(bad)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no population card"):
        PopulationCheck.load(tmp_path)


def test_card_records_its_measurements():
    card = json.loads((DEFAULT_DIR / "card.json").read_text())
    assert set(card["leave_one_source_out"]) == {"ieee8023", "actualmed", "covidrdb"}
    assert card["children_flagged"]["child_val"]["n"] == 652


@pytest.mark.parametrize(
    ("path", "label", "expected"),
    [
        ("train/NORMAL/IM-0115-0001.jpeg", "NORMAL", "normal IM-"),
        ("train/NORMAL/NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL", "normal NORMAL2-"),
        ("train/PNEUMONIA/person1315_virus_2270.jpeg", "PNEUMONIA", "viral pneumonia"),
        ("train/PNEUMONIA/person1_bacteria_1.jpeg", "PNEUMONIA", "bacterial pneumonia"),
    ],
)
def test_subgroup_report_reads_the_series_from_the_file_name(path, label, expected):
    from ml.evaluation.population_groups import series

    assert series(path, label) == expected


def test_subgroup_report_counts_flags_per_group():
    from ml.evaluation.population_groups import rates

    flagged = np.array([True, False, False, True, True])
    groups = np.array(["a", "a", "b", "b", "b"])
    assert rates(flagged, groups, ("a", "b", "c")) == {"a": {"n": 2, "flagged": 1}, "b": {"n": 3, "flagged": 2}}
