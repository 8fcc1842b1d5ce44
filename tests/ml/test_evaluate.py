"""ml.evaluation.evaluate on the fixture folder: every promised key, figure and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.evaluation.evaluate import main

XRAY = Path(__file__).resolve().parents[1] / "fixtures" / "xray"
KEYS = (
    "n",
    "auc",
    "auc_ci",
    "sensitivity",
    "specificity",
    "accuracy",
    "ppv",
    "npv",
    "threshold",
    "ece",
    "confusion",
    "viral_auc",
)


@pytest.fixture(scope="module")
def evaluation(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    main(
        [
            "--model",
            str(tiny_model_dir),
            "--data",
            str(XRAY),
            "--out",
            str(out),
            "--twins",
            str(XRAY),
            "--bootstrap",
            "50",
        ]
    )
    return out, json.loads((out / "metrics.json").read_text())


def test_metrics_json_has_every_key(evaluation):
    _, metrics = evaluation
    for key in KEYS:
        assert key in metrics, key
    assert metrics["n"] == 8
    assert set(metrics["confusion"]) == {"tn", "fp", "fn", "tp"}
    assert sum(metrics["confusion"].values()) == 8
    assert metrics["viral_n"] == 4
    assert metrics["viral_auc"] is not None
    assert len(metrics["auc_ci"]) == 2
    assert metrics["threshold"] == 0.5  # from the card, not refitted


def test_it_writes_figures_scores_and_report(evaluation):
    out, _ = evaluation
    for name in ("roc.png", "pr.png", "calibration.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert len((out / "scores.csv").read_text().splitlines()) == 9
    report = (out / "report.md").read_text()
    assert "tiny-v0" in report
    assert "AUC" in report


def test_twins_of_identical_files_agree_exactly(evaluation):
    _, metrics = evaluation
    assert metrics["twins"]["n"] == 8
    assert metrics["twins"]["mean_abs_diff"] == 0.0
