"""From trained weights to a shippable card: calibration, operating threshold, metrics, speed.

Everything here is fitted or measured on the validation rows of the manifest
only. The operating threshold comes from the rule ``threshold_rules.CHOSEN``,
picked by cross-validation (``ml.evaluation.cv_report``) among rules that set
it from the clean validation images and mildly perturbed copies of them
(exposure, blur, noise, resolution, JPEG, crop); every candidate's
per-condition point is recorded in the card, and the stress test reports
what the chosen one costs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ml.serving.calibration import calibrated_probability, sigmoid
from ml.serving.heatmap import FEATURE_LAYERS, GRADCAM_LAYERS
from ml.serving.preprocess import INPUT_SIZE
from ml.statistics.metrics import (
    at_threshold,
    bootstrap_ci,
    expected_calibration_error,
    roc_auc,
    screening_report,
    threshold_for_sensitivity,
)
from ml.training import perturb, threshold_rules
from ml.training.calibration import fit_platt, fit_temperature
from ml.training.threshold_rules import TARGET_SENSITIVITY

INTENDED_USE = (
    "Research prototype for triage support: flags paediatric AP chest X-rays likely to show pneumonia so a "
    "radiologist reads them first. Not a diagnosis and not a medical device; every image still needs a "
    "qualified reader."
)
LIMITATIONS = [
    (
        "Trained and validated only on children aged 1-5 from one hospital (Guangzhou Women and Children's "
        "Medical Center, Kermany et al. 2018); expect worse performance on adults, other hospitals and scanners."
    ),
    (
        "Validation is a patient-wise split of the official train/ folder; such validation is known to be "
        "optimistic (a 0.998 validation AUC has gone with 0.960 on the official test split)."
    ),
    (
        "Normal and pneumonia originals differ in size and aspect ratio; inputs are squashed to 224x224 exactly "
        "like the training copies, but the model may still use shape cues."
    ),
    "P(viral | pneumonia) comes from noisy labels and is only meaningful when the image shows pneumonia.",
    "The threshold targets sensitivity >= 0.97 on validation; sensitivity on new data can be lower.",
    (
        "P(pneumonia) is calibrated on validation images that are 74 % pneumonia; where pneumonia is rarer the "
        "shown probability is too high. The ranking and the operating point do not depend on it."
    ),
]


def perturbed_logits(logits_fn, images: np.ndarray, perturbations: dict) -> dict[str, dict[str, np.ndarray]]:
    """Logits of every output for perturbed copies of ``images``, one dict per perturbation."""
    return {name: logits_fn(perturb.apply_all(images, f)) for name, f in perturbations.items()}


def save_scores(path: Path, logits: dict, perturbed: dict, manifest_sha256: str) -> None:
    """Validation logits (clean and perturbed) so candidate comparisons need not re-run slow models."""
    arrays = {f"clean__{k}": v for k, v in logits.items()}
    for name, outputs in perturbed.items():
        arrays.update({f"{name}__{k}": v for k, v in outputs.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, manifest_sha256=np.array(manifest_sha256), **arrays)


def robust_calibration(clean: np.ndarray, perturbed: list[np.ndarray], y: np.ndarray) -> tuple[float, float]:
    """Platt scaling (temperature and bias) fitted on the validation images *and* their perturbed copies, pooled.

    Clean validation from ``train/`` is nearly separable for a good model, and on
    separable data the likelihood keeps improving as the temperature goes to
    zero: the fit then turns every score into 0 or 1 (a fitted T of 0.18 for v1),
    which would be wildly overconfident on the shifted data the service will
    see. Pooling the stress-test copies puts real overlap into the fit.
    """
    return fit_platt(np.concatenate([clean, *perturbed]), np.tile(y, 1 + len(perturbed)))


def robust_temperature(clean: np.ndarray, perturbed: list[np.ndarray], y: np.ndarray) -> float:
    """The same pooled fit with the temperature alone (the calibration of cards before v4, kept for comparison)."""
    return fit_temperature(np.concatenate([clean, *perturbed]), np.tile(y, 1 + len(perturbed)))


def choose_threshold(
    y: np.ndarray, probability: np.ndarray, perturbed: dict, rule: str = threshold_rules.CHOSEN
) -> tuple[float, dict]:
    """The operating threshold by ``rule`` and the per-condition 97 %-sensitivity thresholds (recorded in the card)."""
    return (
        threshold_rules.threshold(rule, y, probability, perturbed),
        threshold_rules.candidate_points(y, probability, perturbed),
    )


def stress_table(perturbed: dict, y: np.ndarray, threshold: float) -> dict:
    """AUC and the operating point on each perturbed copy of the validation images."""
    table = {}
    for name, p in perturbed.items():
        point = at_threshold(y, p, threshold)
        table[name] = {
            "auc": roc_auc(y, p),
            "sensitivity": point["sensitivity"],
            "specificity": point["specificity"],
            "threshold_for_target": threshold_for_sensitivity(y, p, TARGET_SENSITIVITY),
        }
    return table


def viral_report(viral_probability: np.ndarray, records, n_resamples: int = 2000) -> dict | None:
    """AUC and accuracy (at 0.5) of P(viral | pneumonia) on the pneumonia images whose name gives the subtype."""
    chosen = [i for i, r in enumerate(records) if r.subtype in ("virus", "bacteria")]
    if not chosen:
        return None
    v = np.array([records[i].subtype == "virus" for i in chosen], dtype=int)
    s = np.asarray(viral_probability)[chosen]
    groups = [records[i].patient for i in chosen]
    if v.min() == v.max():
        return {"n": len(chosen), "auc": None, "accuracy": float(np.mean((s >= 0.5) == v))}
    return {
        "n": len(chosen),
        "n_virus": int(v.sum()),
        "n_bacteria": int((1 - v).sum()),
        "auc": roc_auc(v, s),
        "auc_ci": list(bootstrap_ci(lambda i: roc_auc(v[i], s[i]), groups, n_resamples)),
        "accuracy": float(np.mean((s >= 0.5) == v)),
    }


def build_card(
    model,
    version: str,
    arch: str,
    val_images: np.ndarray,
    val_records,
    training: dict,
    model_file: Path | None = None,
    log_stream=None,
    scores_file: Path | None = None,
    stress: dict | None = None,
) -> dict:
    from ml.serving.inference import batched_logits, compiled_forward
    from ml.training.runs import log, measure_speed

    forward = compiled_forward(model)

    def logits_fn(images):
        return batched_logits(forward, images)

    y = np.array([r.target for r in val_records])
    patients = [r.patient for r in val_records]
    logits = logits_fn(val_images)
    started = time.time()
    perturbed_raw = perturbed_logits(logits_fn, val_images, perturb.STRESS if stress is None else stress)
    if scores_file is not None:
        save_scores(scores_file, logits, perturbed_raw, training.get("manifest_sha256", ""))
    pooled = [out["pneumonia"] for out in perturbed_raw.values()]
    temperature, bias = robust_calibration(logits["pneumonia"], pooled, y)
    temperature_only = robust_temperature(logits["pneumonia"], pooled, y)
    temperature_clean_only = fit_temperature(logits["pneumonia"], y)
    probability = calibrated_probability(logits["pneumonia"], temperature, bias)
    log(
        f"calibration: temperature {temperature:.3f}, bias {bias:.3f} (temperature alone {temperature_only:.3f}; "
        f"clean validation alone {temperature_clean_only:.3f})",
        log_stream,
    )
    perturbed = {
        name: calibrated_probability(out["pneumonia"], temperature, bias) for name, out in perturbed_raw.items()
    }
    threshold, candidates = choose_threshold(y, probability, perturbed)
    clean_threshold = candidates["clean"]
    stress = stress_table(perturbed, y, threshold)
    log(
        f"threshold {threshold:.4f} (clean 97%-sensitivity point {clean_threshold:.4f}); "
        f"stress test took {time.time() - started:.0f}s",
        log_stream,
    )

    metrics = screening_report(y, probability, threshold, patients)
    metrics["threshold_clean_97"] = clean_threshold
    metrics["at_clean_97"] = at_threshold(y, probability, clean_threshold)
    metrics["ece_before_temperature"] = expected_calibration_error(y, sigmoid(logits["pneumonia"]))
    metrics["ece_temperature_only"] = expected_calibration_error(
        y, calibrated_probability(logits["pneumonia"], temperature_only)
    )
    metrics["viral"] = viral_report(sigmoid(logits["viral"]), val_records) if "viral" in logits else None
    log(
        f"validation: auc {metrics['auc']:.4f} {metrics['auc_ci']} sens {metrics['sensitivity']:.3f} "
        f"spec {metrics['specificity']:.3f} ece {metrics['ece']:.4f} viral {metrics['viral']}",
        log_stream,
    )

    speed = measure_speed(model, INPUT_SIZE)
    return {
        "version": version,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": arch,
        "parameters": int(model.count_params()),
        "file_bytes": model_file.stat().st_size if model_file and model_file.exists() else None,
        "input_size": INPUT_SIZE,
        "input": "uint8 array (N, 224, 224): grey image squashed to 224x224 ignoring aspect ratio by "
        "ml.serving.preprocess.squash_to_input (Pillow bilinear)",
        "preprocessing": "inside the model: x/127.5 - 1, grey repeated to 3 channels",
        "outputs": {
            "pneumonia": "logit; P = sigmoid(logit / temperature + bias)",
            "viral": "logit of P(viral | pneumonia); sigmoid, no temperature",
        },
        "feature_layer": FEATURE_LAYERS.get(arch),
        "gradcam_layer": GRADCAM_LAYERS.get(arch),
        "heatmap_method": "hirescam",  # see ml/serving/heatmap.py for why not plain Grad-CAM
        "threshold": threshold,
        "threshold_rule": threshold_rules.describe(threshold_rules.CHOSEN),
        "threshold_candidates": candidates,
        "temperature": temperature,
        "bias": bias,
        "temperature_rule": "Platt scaling: NLL fit of temperature and bias on clean + all stress-perturbed "
        "validation copies, pooled",
        "calibration_prevalence": round(float(y.mean()), 4),
        "calibration_prevalence_note": f"share of pneumonia in the validation split the calibration was fitted on "
        f"({int(y.sum())} of {y.size} images); a site prevalence shifts probabilities from this prior "
        "(prior-shift correction)",
        "temperature_only": temperature_only,
        "temperature_clean_only": temperature_clean_only,
        "validation": metrics,
        "stress_test": stress,
        "speed": speed,
        "training": training,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "data": "Kermany, Zhang & Goldbaum, Chest X-Ray Images (Pneumonia), Mendeley Data v2, "
        "doi:10.17632/rscbjbr9sj.2, CC BY 4.0",
    }


def main(argv: list[str] | None = None) -> None:
    """Re-derive temperature, threshold, metrics and speed for an existing model folder, keeping its training record.

    python -m ml.training.finalize --model ml/models/v4 --data ../shared/data/chest_xray
    """
    import argparse
    import json

    import keras

    from ml.training.data import load_inputs
    from ml.training.runs import DEFAULT_MANIFEST, RUNS
    from ml.training.split import file_sha256, read_manifest, records_for

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    args = parser.parse_args(argv)
    folder = Path(args.model)
    old = json.loads((folder / "card.json").read_text())
    if old["training"]["manifest_sha256"] != file_sha256(args.manifest):
        raise SystemExit(f"{args.manifest} is not the manifest {folder} was trained on")
    val_records = records_for(read_manifest(args.manifest), "val")
    model = keras.models.load_model(folder / "model.keras", compile=False)
    card = build_card(
        model=model,
        version=old["version"],
        arch=old["architecture"],
        val_images=load_inputs(args.data, val_records),
        val_records=val_records,
        training=old["training"],
        model_file=folder / "model.keras",
        scores_file=RUNS / folder.name / "val_scores.npz",
    )
    for kept in ("lung_field", "derived_from", "population"):  # fitted or stated apart from the validation scores
        if kept in old:
            card[kept] = old[kept]
    card["feature_layer"] = old.get("feature_layer", card["feature_layer"])
    # The heatmap of a served model must not change under a re-derived card (v1's predates the choice).
    card["gradcam_layer"] = old.get("gradcam_layer", card["gradcam_layer"])
    card["heatmap_method"] = old.get("heatmap_method", "gradcam")
    card["refinalized_utc"] = card.pop("created_utc")
    card["created_utc"] = old["created_utc"]
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"rewrote {folder / 'card.json'}")


if __name__ == "__main__":
    main()
