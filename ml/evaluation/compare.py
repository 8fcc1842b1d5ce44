"""Candidate comparison on the one validation split: accuracy, robustness, size and speed.

    python -m ml.evaluation.compare --data ../shared/data/chest_xray --out ml/runs/compare \\
        --models ml/models/v1 ml/runs/candidates/small_cnn ml/runs/candidates/xception_lr \\
        --ensemble v1+xception_lr

Every candidate is a model folder with the same contract (uint8 in, logits
out, card with temperature and threshold), so they are all scored by the same
code: validation AUC with a patient-bootstrap CI, the operating point at the
card's threshold, ECE, viral AUC, the stress test (AUC and the operating point
under each perturbation) and CPU milliseconds per image at batch 1 and 32.
Validation logits come from ``ml/runs/<name>/val_scores.npz`` when training
saved them for this manifest, otherwise they are computed here.

An ensemble averages its members' calibrated logits; its own
calibration and robust threshold are then fitted on validation with the same
rule as a single model (so it gets no extra advantage), and its cost is the
sum of its members'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ml.serving.calibration import calibrated_probability, sigmoid
from ml.statistics.metrics import screening_report
from ml.training import perturb
from ml.training.calibration import fit_platt
from ml.training.data import load_inputs
from ml.training.finalize import choose_threshold, perturbed_logits, stress_table, viral_report
from ml.training.runs import DEFAULT_MANIFEST, RUNS, hardware, measure_speed
from ml.training.split import file_sha256, read_manifest, records_for


def candidate_scores(model_dir: Path, val_images: np.ndarray, manifest_sha: str) -> dict[str, dict[str, np.ndarray]]:
    """{"clean": {"pneumonia": logits, "viral": logits}, "<perturbation>": {...}, ...}"""
    cached = RUNS / model_dir.name / "val_scores.npz"
    if cached.exists():
        data = np.load(cached)
        if str(data["manifest_sha256"]) == manifest_sha and all(f"{p}__pneumonia" in data for p in perturb.MILD):
            scores: dict[str, dict[str, np.ndarray]] = {}
            for key in data.files:
                if "__" in key:
                    condition, output = key.split("__")
                    scores.setdefault(condition, {})[output] = data[key]
            return scores
    from ml.serving.inference import Screener
    from ml.training.finalize import save_scores

    screener = Screener.load(model_dir)
    scores = {"clean": screener.logits(val_images)}
    perturbed = perturbed_logits(screener.logits, val_images, perturb.STRESS)
    save_scores(cached, scores["clean"], perturbed, manifest_sha)
    return scores | perturbed


def summarise(
    name: str, scores: dict, temperature: float, threshold: float, y: np.ndarray, records, cost: dict, bias: float = 0.0
) -> dict:
    patients = [r.patient for r in records]
    probability = calibrated_probability(scores["clean"]["pneumonia"], temperature, bias)
    report = screening_report(y, probability, threshold, patients)
    perturbed = {
        k: calibrated_probability(v["pneumonia"], temperature, bias) for k, v in scores.items() if k != "clean"
    }
    stress = stress_table(perturbed, y, threshold)
    worst_auc = min(stress, key=lambda k: stress[k]["auc"])  # over the conditions scored (full or mild set)
    mild = {k: v for k, v in stress.items() if k in perturb.MILD}
    viral = viral_report(sigmoid(scores["clean"]["viral"]), records) if "viral" in scores["clean"] else None
    return {
        "name": name,
        "auc": report["auc"],
        "auc_ci": report["auc_ci"],
        "threshold": threshold,
        "temperature": temperature,
        "bias": bias,
        "sensitivity": report["sensitivity"],
        "sensitivity_ci": report["sensitivity_ci"],
        "specificity": report["specificity"],
        "specificity_ci": report["specificity_ci"],
        "ece": report["ece"],
        "viral_auc": viral["auc"] if viral else None,
        "stress_worst_auc": stress[worst_auc]["auc"],
        "stress_worst_auc_condition": worst_auc,
        "stress_max_auc_drop_mild": report["auc"] - min(v["auc"] for v in mild.values()),
        "stress_min_sensitivity_mild": min(v["sensitivity"] for v in mild.values()),
        "stress_min_specificity_mild": min(v["specificity"] for v in mild.values()),
        "stress_min_sensitivity_all": min(v["sensitivity"] for v in stress.values()),
        "stress_min_sensitivity_all_condition": min(stress, key=lambda k: stress[k]["sensitivity"]),
        "stress_min_specificity_all": min(v["specificity"] for v in stress.values()),
        "stress_min_specificity_all_condition": min(stress, key=lambda k: stress[k]["specificity"]),
        "stress_conditions": len(stress),
        "stress": stress,
        **cost,
    }


def ensemble(members: list[dict], y: np.ndarray) -> tuple[dict, float, float, float]:
    """Average of members' calibrated logits; Platt calibration and robust threshold refitted on validation.

    Returns (scores, temperature, bias, threshold).
    """
    conditions = [c for c in members[0]["scores"] if all(c in m["scores"] for m in members)]
    combined = {}
    for condition in conditions:
        combined[condition] = {
            output: np.mean(
                [
                    m["scores"][condition][output] / m["temperature"] + m.get("bias", 0.0)
                    if output == "pneumonia"
                    else m["scores"][condition][output]
                    for m in members
                ],
                axis=0,
            )
            for output in ("pneumonia", "viral")
            if all(output in m["scores"][condition] for m in members)
        }
    temperature, bias = fit_platt(combined["clean"]["pneumonia"], y)
    probability = calibrated_probability(combined["clean"]["pneumonia"], temperature, bias)
    perturbed = {
        k: calibrated_probability(v["pneumonia"], temperature, bias) for k, v in combined.items() if k in perturb.MILD
    }
    threshold, _ = choose_threshold(y, probability, perturbed)
    return combined, temperature, bias, threshold


def markdown_table(rows: list[dict]) -> str:
    def ci(pair):
        return f"[{pair[0]:.3f}, {pair[1]:.3f}]"

    lines = [
        (
            "| candidate | val AUC [95 % CI] | sens. @ thr [CI] | spec. @ thr [CI] | ECE | viral AUC "
            "| worst stress AUC | worst sens. / spec. over all stress conditions | min sens. / spec. under mild stress "
            "| params | file MB | ms/img b1 | ms/img b32 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        viral = "n/a" if r["viral_auc"] is None else f"{r['viral_auc']:.3f}"
        lines.append(
            f"| {r['name']} | {r['auc']:.4f} {ci(r['auc_ci'])} | {r['sensitivity']:.3f} {ci(r['sensitivity_ci'])} "
            f"| {r['specificity']:.3f} {ci(r['specificity_ci'])} | {r['ece']:.3f} | {viral} "
            f"| {r['stress_worst_auc']:.4f} ({r['stress_worst_auc_condition']}) "
            f"| {r['stress_min_sensitivity_all']:.3f} ({r['stress_min_sensitivity_all_condition']}) / "
            f"{r['stress_min_specificity_all']:.3f} ({r['stress_min_specificity_all_condition']}) "
            f"| {r['stress_min_sensitivity_mild']:.3f} / {r['stress_min_specificity_mild']:.3f} "
            f"| {r['parameters']:,} | {r['file_mb']:.1f} | {r['ms_b1']:.1f} | {r['ms_b32']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--models", nargs="+", required=True, help="model folders; the folder name is the label")
    parser.add_argument("--ensemble", nargs="*", default=[], help="e.g. v1+xception_lr (folder names joined by +)")
    args = parser.parse_args(argv)

    import keras

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_sha = file_sha256(args.manifest)
    val_records = records_for(read_manifest(args.manifest), "val")
    val_images = load_inputs(args.data, val_records)
    y = np.array([r.target for r in val_records])

    members, rows = {}, []
    for folder in map(Path, args.models):
        card = json.loads((folder / "card.json").read_text())
        started = time.time()
        scores = candidate_scores(folder, val_images, manifest_sha)
        model = keras.models.load_model(folder / "model.keras", compile=False)
        speed = measure_speed(model, int(card["input_size"]))
        cost = {
            "parameters": int(model.count_params()),
            "file_mb": (folder / "model.keras").stat().st_size / 2**20,
            "ms_b1": speed["ms_per_image_batch1"],
            "ms_b32": speed["ms_per_image_batch32"],
        }
        bias = card.get("bias", 0.0)
        members[folder.name] = {"scores": scores, "temperature": card["temperature"], "bias": bias, "cost": cost}
        rows.append(summarise(folder.name, scores, card["temperature"], card["threshold"], y, val_records, cost, bias))
        print(
            f"{folder.name}: AUC {rows[-1]['auc']:.4f} spec {rows[-1]['specificity']:.3f} "
            f"b32 {cost['ms_b32']} ms ({time.time() - started:.0f}s)",
            flush=True,
        )
    for spec in args.ensemble:
        chosen = [members[name] for name in spec.split("+")]
        scores, temperature, bias, threshold = ensemble(chosen, y)
        cost = {
            "parameters": sum(m["cost"]["parameters"] for m in chosen),
            "file_mb": sum(m["cost"]["file_mb"] for m in chosen),
            "ms_b1": sum(m["cost"]["ms_b1"] for m in chosen),
            "ms_b32": sum(m["cost"]["ms_b32"] for m in chosen),
        }
        rows.append(summarise(f"ensemble {spec}", scores, temperature, threshold, y, val_records, cost, bias))

    result = {
        "manifest": args.manifest,
        "manifest_sha256": manifest_sha,
        "n_val": len(val_records),
        "hardware": hardware(),
        "candidates": rows,
    }
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "compare.md").write_text(markdown_table(rows))
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
