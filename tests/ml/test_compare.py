"""Candidate comparison: ensembles are refitted by the same rule, the table renders."""

from __future__ import annotations

import numpy as np

from ml.evaluation.compare import ensemble, markdown_table, summarise
from ml.training import perturb
from ml.training.data import ImageRecord


def fake_candidate(seed: int, y: np.ndarray) -> dict:
    rng = np.random.default_rng(seed)

    def logits():
        return {"pneumonia": 4 * y - 2 + rng.normal(0, 1.5, y.size), "viral": rng.normal(0, 1, y.size)}

    return {"scores": {"clean": logits()} | {name: logits() for name in perturb.MILD}, "temperature": 2.0}


def test_ensemble_of_two_noisy_candidates_ranks_better_than_either():
    y = np.tile([0, 1], 200)
    a, b = fake_candidate(1, y), fake_candidate(2, y)
    combined, temperature, bias, threshold = ensemble([a, b], y)
    from ml.statistics.metrics import roc_auc

    assert roc_auc(y, combined["clean"]["pneumonia"]) > max(
        roc_auc(y, a["scores"]["clean"]["pneumonia"]), roc_auc(y, b["scores"]["clean"]["pneumonia"])
    )
    assert temperature > 0
    assert 0 < threshold < 1


def test_summary_row_renders_in_the_table():
    y = np.tile([0, 1], 100)
    records = [
        ImageRecord(
            f"x{i}.jpeg",
            "PNEUMONIA" if t else "NORMAL",
            "virus" if t and i % 4 == 1 else ("bacteria" if t else "normal"),
            f"p{i}",
        )
        for i, t in enumerate(y)
    ]
    candidate = fake_candidate(3, y)
    cost = {"parameters": 10, "file_mb": 0.1, "ms_b1": 1.0, "ms_b32": 0.5}
    row = summarise("fake", candidate["scores"], 2.0, 0.5, y, records, cost)
    assert row["stress_conditions"] == len(perturb.MILD)
    worst = min(row["stress"], key=lambda k: row["stress"][k]["specificity"])
    assert row["stress_min_specificity_all_condition"] == worst
    assert row["stress_min_specificity_all"] == row["stress"][worst]["specificity"]
    table = markdown_table([row])
    assert table.count("\n") == 3
    assert "| fake |" in table
    header, rule, line = table.splitlines()
    assert header.count("|") == rule.count("|") == line.count("|")
    assert f"/ {row['stress_min_specificity_all']:.3f} ({worst})" in line
