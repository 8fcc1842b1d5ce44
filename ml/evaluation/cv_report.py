"""Threshold rules and calibration judged on the eight cross-validation folds of one recipe.

A rule (``ml.training.threshold_rules``) is set on validation images and must
hold on images it has not seen. Within each fold this deals the validation
patients into two stratified halves, sets every rule's threshold (and fits
the card's Platt calibration) on one half and measures the other, both ways,
``--repeats`` times: held-out sensitivity and specificity on the clean images,
their mean over the nine mild perturbations, and the worst of the twenty
stress conditions. Setting and measuring on the same images would flatter
every rule by the same optimism that made v4's rule look safe.

The chosen rule is the one that keeps the mean held-out sensitivity on the
clean images >= 0.97 in every fold, with the highest mean clean specificity
(issue 15's criterion). The report's first version also required the mean
over the mild copies to reach 0.97 in every fold; under that, ``min_mild``
would have been kept, the quartile rule missing it by 0.0003 on one fold, a
difference the half-splits cannot resolve (ml/README.md gives both).

Calibration: the held-out halves' ECE re-weighted to 30 %, 50 % and 74 %
pneumonia, for the card's probabilities as they are and after the prior-shift
correction (``ml.serving.calibration.shift_prevalence``) that a site's
adopted prevalence applies.

    python -m ml.evaluation.cv_report --name v4 --out ml/runs/cv_report_v4
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.calibration import calibrated_probability, shift_prevalence
from ml.statistics.metrics import at_threshold, expected_calibration_error, prevalence_weights, roc_auc
from ml.training import perturb, threshold_rules
from ml.training.calibration import fit_platt
from ml.training.cross_validate import fold_manifest, fold_run
from ml.training.runs import DEFAULT_MANIFEST
from ml.training.split import file_sha256, read_manifest, records_for

PREVALENCES = (0.30, 0.50, 0.74)
SEED = 20261202


@dataclass
class Fold:
    index: int
    y: np.ndarray
    patients: np.ndarray
    scores: dict[str, np.ndarray]  # condition -> pneumonia logits ("clean" and every stress condition)


def load_fold(name: str, index: int, manifest: str | Path = DEFAULT_MANIFEST) -> Fold:
    path = Path(manifest) if index == 0 else fold_manifest(manifest, index)
    records = records_for(read_manifest(path), "val")
    saved = np.load(fold_run(name, index) / "val_scores.npz")
    if str(saved["manifest_sha256"]) != file_sha256(path):
        raise SystemExit(f"fold {index}: scores were computed on another manifest than {path}")
    scores = {key.removesuffix("__pneumonia"): saved[key] for key in saved.files if key.endswith("__pneumonia")}
    return Fold(index, np.array([r.target for r in records]), np.array([r.patient for r in records]), scores)


def halves(fold: Fold, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks over the images: patients dealt at random into halves within each label."""
    first = np.zeros(fold.y.size, dtype=bool)
    for label in (0, 1):
        patients = np.unique(fold.patients[fold.y == label])
        chosen = rng.permutation(patients)[: patients.size // 2]
        first |= np.isin(fold.patients, chosen) & (fold.y == label)
    return first, ~first


def _held_out(fold: Fold, fit: np.ndarray, test: np.ndarray) -> dict:
    y_fit, y_test = fold.y[fit], fold.y[test]
    clean_fit = fold.scores["clean"][fit]
    perturbed_fit = {n: s[fit] for n, s in fold.scores.items() if n != "clean"}
    stress = [n for n in perturb.STRESS if n in fold.scores]
    rules = {}
    for rule in threshold_rules.RULES:
        t = threshold_rules.threshold(rule, y_fit, clean_fit, perturbed_fit)
        clean = at_threshold(y_test, fold.scores["clean"][test], t)
        mild = [at_threshold(y_test, fold.scores[n][test], t) for n in perturb.MILD]
        every = [at_threshold(y_test, fold.scores[n][test], t) for n in stress]
        rules[rule] = {
            "sensitivity": clean["sensitivity"],
            "specificity": clean["specificity"],
            "mild_sensitivity": float(np.mean([m["sensitivity"] for m in mild])),
            "mild_specificity": float(np.mean([m["specificity"] for m in mild])),
            "worst_sensitivity": min(m["sensitivity"] for m in every),
            "worst_specificity": min(m["specificity"] for m in every),
        }
    pooled = np.concatenate([fold.scores["clean"][fit], *(fold.scores[n][fit] for n in stress)])
    temperature, bias = fit_platt(pooled, np.tile(y_fit, 1 + len(stress)))
    p_test = calibrated_probability(fold.scores["clean"][test], temperature, bias)
    calibrated_for = float(y_fit.mean())
    ece = {}
    for prevalence in PREVALENCES:
        w = prevalence_weights(y_test, prevalence)
        ece[f"{prevalence:.2f}"] = {
            "as_card": expected_calibration_error(y_test, p_test, weights=w),
            "shifted": expected_calibration_error(
                y_test, shift_prevalence(p_test, calibrated_for, prevalence), weights=w
            ),
        }
    return {"rules": rules, "ece": ece}


def fold_report(fold: Fold, repeats: int) -> dict:
    rng = np.random.default_rng(SEED + fold.index)
    runs = []
    for _ in range(repeats):
        a, b = halves(fold, rng)
        runs += [_held_out(fold, a, b), _held_out(fold, b, a)]
    rules = {
        rule: {key: float(np.mean([r["rules"][rule][key] for r in runs])) for key in runs[0]["rules"][rule]}
        for rule in threshold_rules.RULES
    }
    for rule in rules:
        rules[rule]["share_below_target"] = float(
            np.mean([r["rules"][rule]["sensitivity"] < threshold_rules.TARGET_SENSITIVITY for r in runs])
        )
    ece = {
        p: {kind: float(np.mean([r["ece"][p][kind] for r in runs])) for kind in ("as_card", "shifted")}
        for p in runs[0]["ece"]
    }
    return {
        "fold": fold.index,
        "n": int(fold.y.size),
        "n_pneumonia": int(fold.y.sum()),
        "auc": roc_auc(fold.y, fold.scores["clean"]),
        "rules": rules,
        "ece": ece,
    }


def choose(reports: list[dict]) -> str:
    target = threshold_rules.TARGET_SENSITIVITY
    safe = [rule for rule in threshold_rules.RULES if all(r["rules"][rule]["sensitivity"] >= target for r in reports)]
    if not safe:
        raise SystemExit("no rule keeps held-out sensitivity >= target on every fold")
    return max(safe, key=lambda rule: np.mean([r["rules"][rule]["specificity"] for r in reports]))


def markdown(reports: list[dict], chosen: str) -> str:
    folds = " / ".join(str(r["fold"]) for r in reports)
    lines = [
        f"Held-out halves, folds {folds} (mean over repeats); clean sens. and spec., then mean over the 9 mild "
        "copies, then the worst of the 20 stress conditions:",
        "",
        "| rule | clean sensitivity | clean specificity | mean sens. | mean spec. | mild sens. (mean) | "
        "mild spec. (mean) | worst stress sens. (mean) | worst stress spec. (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rule in threshold_rules.RULES:
        cells = [r["rules"][rule] for r in reports]
        lines.append(
            f"| {'**' + rule + '**' if rule == chosen else rule} | "
            + " / ".join(f"{c['sensitivity']:.3f}" for c in cells)
            + " | "
            + " / ".join(f"{c['specificity']:.3f}" for c in cells)
            + f" | {np.mean([c['sensitivity'] for c in cells]):.3f} | {np.mean([c['specificity'] for c in cells]):.3f}"
            + f" | {np.mean([c['mild_sensitivity'] for c in cells]):.3f}"
            + f" | {np.mean([c['mild_specificity'] for c in cells]):.3f}"
            + f" | {np.mean([c['worst_sensitivity'] for c in cells]):.3f}"
            + f" | {np.mean([c['worst_specificity'] for c in cells]):.3f} |"
        )
    lines += [
        "",
        "ECE of held-out halves re-weighted to a prevalence, card's calibration as is → after the prior shift:",
        "",
        "| fold | AUC | " + " | ".join(f"ECE at {float(p):.0%}" for p in reports[0]["ece"]) + " |",
        "|---|---|" + "---|" * len(reports[0]["ece"]),
    ]
    for r in reports:
        lines.append(
            f"| {r['fold']} | {r['auc']:.4f} | "
            + " | ".join(f"{e['as_card']:.3f} → {e['shifted']:.3f}" for e in r["ece"].values())
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="recipe name of the cross-validation runs, e.g. v4")
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    reports = [fold_report(load_fold(args.name, k, args.manifest), args.repeats) for k in args.folds]
    chosen = choose(reports)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"chosen": chosen, "folds": reports}, indent=1) + "\n")
    text = markdown(reports, chosen) + f"\n\nChosen rule: {threshold_rules.describe(chosen)}\n"
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
