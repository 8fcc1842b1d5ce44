"""Frozen ImageNet backbone + logistic-regression heads, from cached features.

    python -m ml.training.train_frozen --data ../shared/data/chest_xray --out ml/runs/candidates/xception_lr

Fine-tuning Xception is out of reach on a 2-core CPU (~75 ms/image forward
alone), but its pooled features are strong and pretrained features are known
to generalise better than networks trained from scratch on this data. The
pooled 2,048-d features of every training image (plus augmented copies) are
computed once and cached under ``ml/cache/``; the regularisation strength is
chosen by patient-wise cross-validation over the manifest's training folds
(validation never touches it); the fitted heads (standardisation folded in)
become Dense layers of an ordinary Keras model with the same uint8-in,
logits-out contract as the shipped model, so evaluation, calibration and the
stress test are the same code for every candidate.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.training import perturb
from ml.training.data import load_inputs
from ml.training.feature_cache import CACHE, activations, cached
from ml.training.runs import DEFAULT_MANIFEST, log, start_run, training_record
from ml.training.split import file_sha256, read_manifest, records_for
from ml.training.train import targets

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


@dataclass
class HeadFit:
    coef: np.ndarray  # on raw (unstandardised) features
    intercept: float
    c: float
    cv_auc: float


def pooled_features(model, images: np.ndarray, augment: bool, seed: int) -> np.ndarray:
    """Pooled backbone features (float32), of the clean images or of one copy with v1's augmentation."""
    import keras

    pool = keras.Model(model.inputs, model.get_layer("pool").output)
    return activations(pool, images, {} if augment else None, seed, dtype=np.float32)


def fit_head(features: np.ndarray, y: np.ndarray, folds: np.ndarray, balanced: bool = True) -> HeadFit:
    """Logistic regression; C chosen by mean AUC over patient-wise folds (the manifest's training folds)."""
    from sklearn.linear_model import LogisticRegression

    from ml.statistics.metrics import roc_auc

    mean, std = features.mean(0), features.std(0) + 1e-6
    z = (features - mean) / std
    weight = "balanced" if balanced else None
    scores = {}
    for c in C_GRID:
        aucs = []
        for fold in np.unique(folds):
            held = folds == fold
            clf = LogisticRegression(C=c, class_weight=weight, max_iter=3000).fit(z[~held], y[~held])
            aucs.append(roc_auc(y[held], clf.decision_function(z[held])))
        scores[c] = float(np.mean(aucs))
    best = max(C_GRID, key=lambda c: (scores[c], -c))
    clf = LogisticRegression(C=best, class_weight=weight, max_iter=3000).fit(z, y)
    coef = clf.coef_[0] / std
    return HeadFit(coef=coef, intercept=float(clf.intercept_[0] - np.sum(coef * mean)), c=best, cv_auc=scores[best])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="model folder to write (not shipped: Xception is 80+ MB)")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--arch", default="xception")
    parser.add_argument("--augmented-copies", type=int, default=1)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument(
        "--stress", choices=("full", "mild"), default="full", help="mild: only the perturbations the threshold uses"
    )
    args = parser.parse_args(argv)

    import keras

    from ml.training import finalize
    from ml.training.model import BUILDERS

    started = time.time()
    out = Path(args.out)
    run_dir, log_stream, command = start_run(out, "ml.training.train_frozen", argv)
    keras.utils.set_random_seed(args.seed)
    rows = read_manifest(args.manifest)
    train_rows = [r for r in rows if r["role"] == "train"]
    train_records, val_records = records_for(rows, "train"), records_for(rows, "val")
    folds = np.array([int(r["fold"]) for r in train_rows])
    train_images = load_inputs(args.data, train_records)
    val_images = load_inputs(args.data, val_records)
    y, viral = targets(train_records)

    model = BUILDERS[args.arch]()
    sha = file_sha256(args.manifest)[:12]
    cache_started = time.time()
    copies = [
        cached(
            CACHE / f"{args.arch}_pool_{sha}_train_copy{copy}.npy",
            lambda copy=copy: pooled_features(model, train_images, augment=copy > 0, seed=args.seed + copy),
        )
        for copy in range(1 + args.augmented_copies)
    ]
    log(f"features of {len(copies)} train copies: {time.time() - cache_started:.0f}s", log_stream)
    features = np.concatenate(copies)
    y_all, viral_all, folds_all = np.tile(y, len(copies)), np.tile(viral, len(copies)), np.tile(folds, len(copies))

    fit_started = time.time()
    pneumonia = fit_head(features, y_all, folds_all)
    has = viral_all >= 0
    viral_head = fit_head(features[has], viral_all[has], folds_all[has])
    fit_seconds = round(time.time() - fit_started)
    log(
        f"pneumonia head C={pneumonia.c} cv_auc={pneumonia.cv_auc:.4f}; viral head C={viral_head.c} "
        f"cv_auc={viral_head.cv_auc:.4f} ({fit_seconds}s)",
        log_stream,
    )
    model.get_layer("pneumonia_logit").set_weights(
        [pneumonia.coef[:, None].astype(np.float32), np.array([pneumonia.intercept], np.float32)]
    )
    model.get_layer("viral_logit").set_weights(
        [viral_head.coef[:, None].astype(np.float32), np.array([viral_head.intercept], np.float32)]
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    card = finalize.build_card(
        model=model,
        version=out.name,
        arch=f"{args.arch}_frozen_lr",
        val_images=val_images,
        val_records=val_records,
        model_file=out / "model.keras",
        scores_file=run_dir / "val_scores.npz",
        stress=perturb.STRESS if args.stress == "full" else perturb.MILD,
        log_stream=log_stream,
        training=training_record(
            args.manifest,
            "ml.training.train_frozen",
            command,
            train_records,
            val_records,
            augmented_copies=args.augmented_copies,
            pneumonia_head={"C": pneumonia.c, "cv_auc": pneumonia.cv_auc},
            viral_head={"C": viral_head.c, "cv_auc": viral_head.cv_auc},
            fit_seconds=fit_seconds,
        ),
    )
    card["training"]["total_seconds"] = round(time.time() - started)
    card["feature_layer"] = "block14_sepconv2_act"
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"wrote {out} in {card['training']['total_seconds']}s", log_stream)


if __name__ == "__main__":
    main()
