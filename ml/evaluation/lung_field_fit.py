"""Fitting a model's lung-field head on the hand-drawn lung boxes, and measuring what it does to the heatmaps.

The head (``ml.serving.heatmap.LungField``) is a logistic regression per
cell of the heatmap layer: the layer's 128 activations plus a quadratic in
the cell's position, soft targets = the share of the cell inside a drawn
lung. Each annotated image is used twice, as its 224x224 training copy and
as its full-resolution twin squashed the serving way, so the head learns the
lungs at both; both copies of an image always fall in the same CV fold.

It reports, out of fold (a head never judged on images it was fitted on):
the share of heatmap mass inside the drawn lungs and how often the salient
box's centre is inside them (pneumonia images), for the raw map, for a
position-only prior and for the full head, at both resolutions. Then it
fits the head on every annotated image and, with ``--write``, puts it into
the model folder's card.

    python -m ml.evaluation.lung_field_fit --model ml/models/v5 --data ../shared/data/chest_xray \
        --hires ../shared/data/chest_xray_hires/train --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ml.evaluation import lung_boxes
from ml.serving.heatmap import boxes_mask, lung_weighted, position_basis

C = 1.0  # inverse L2 strength; 0.01 / 0.1 / 1 compared out of fold (ml/README.md), 1 kept
FOLDS = 5
SEED = 20261202


def coverage(lungs, grid: int) -> np.ndarray:
    """Share of each cell of a ``grid`` x ``grid`` map inside the union of the lung boxes."""
    mask = boxes_mask(lungs, 224).astype(np.float64)
    cell = 224 // grid
    return mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3))


def design(features: np.ndarray, use_features: bool) -> np.ndarray:
    """Per-cell inputs: the activations (if used) and the position basis, (N * g * g, k)."""
    n, rows, cols, channels = features.shape
    position = np.broadcast_to(position_basis(rows, cols), (n, rows, cols, 6)).reshape(-1, 6)
    if not use_features:
        return position
    return np.concatenate([features.reshape(-1, channels), position], axis=1)


def fit_head(x: np.ndarray, target: np.ndarray):
    """Logistic regression on soft targets: each cell once as lung (weight = coverage) and once as not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    y = np.concatenate([np.ones(len(z)), np.zeros(len(z))])
    weights = np.concatenate([target, 1 - target])
    model = LogisticRegression(C=C, max_iter=2000).fit(np.vstack([z, z]), y, sample_weight=weights)
    # Fold the standardisation into the weights, so serving needs one dot product.
    w = model.coef_[0] / scaler.scale_
    b = float(model.intercept_[0] - np.sum(model.coef_[0] * scaler.mean_ / scaler.scale_))
    return w, b


def lung_probability(features: np.ndarray, w: np.ndarray, b: float, use_features: bool) -> np.ndarray:
    n, rows, cols, _ = features.shape
    logits = design(features, use_features) @ w + b
    return (1 / (1 + np.exp(-logits))).reshape(n, rows, cols)


def weighted_maps(cams: np.ndarray, lungs_prob: np.ndarray) -> list[np.ndarray]:
    """The maps a reader would see with these lung fields (``heatmap.lung_weighted``)."""
    return [lung_weighted(cam, lung)[0] for cam, lung in zip(cams, lungs_prob, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder whose heatmap layer the head reads")
    parser.add_argument("--data", required=True, help="chest_xray folder (224x224 copies)")
    parser.add_argument("--hires", required=True, help="chest_xray_hires/train folder (full-resolution twins)")
    parser.add_argument("--boxes", default=str(lung_boxes.BOXES_FILE))
    parser.add_argument("--write", action="store_true", help="write the head fitted on all images into the card")
    args = parser.parse_args(argv)

    import keras

    from ml.serving.heatmap import ExplainingScreener
    from ml.serving.inference import Screener

    entries = [e for e in lung_boxes.load(args.boxes)["images"] if e["lungs"]]
    folder = Path(args.model)
    card = json.loads((folder / "card.json").read_text())
    screener = Screener.load(folder)
    screener.card.pop("lung_field", None)  # measure and fit against the raw map
    explainer = ExplainingScreener(screener)
    feature_model = keras.Model(screener.model.input, screener.model.get_layer(explainer.layer_name).output)

    copies = lung_boxes.inputs(entries, args.data, args.hires)
    features = {k: np.asarray(feature_model.predict(v, batch_size=32, verbose=0)) for k, v in copies.items()}
    cams = {k: np.stack([x.heatmap for x in explainer.explain(v)]) for k, v in copies.items()}
    grid = features["224"].shape[1]
    annotations = [lung_boxes.lungs_of(e) for e in entries]
    targets = np.stack([coverage(lungs, grid) for lungs in annotations])

    fold_of = np.random.default_rng(SEED).permutation(len(entries)) % FOLDS
    report: dict = {"n_images": len(entries), "folds": FOLDS, "C": C, "raw": {}, "position_only": {}, "head": {}}
    for copy in copies:
        report["raw"][copy] = lung_boxes.figures(cams[copy], entries)
    for variant, use_features in (("position_only", False), ("head", True)):
        out_of_fold = {copy: np.zeros_like(targets) for copy in copies}
        for k in range(FOLDS):
            train, test = fold_of != k, fold_of == k
            x = np.vstack([design(features[c][train], use_features) for c in copies])
            y = np.concatenate([targets[train].reshape(-1) for _ in copies])
            w, b = fit_head(x, y)
            for c in copies:
                out_of_fold[c][test] = lung_probability(features[c][test], w, b, use_features)
        for copy in copies:
            figures = lung_boxes.figures(weighted_maps(cams[copy], out_of_fold[copy]), entries)
            predicted, truth = out_of_fold[copy] >= 0.5, targets >= 0.5
            figures["cell_iou"] = float((predicted & truth).sum() / (predicted | truth).sum())
            report[variant][copy] = figures

    for variant in ("raw", "position_only", "head"):
        for copy, f in report[variant].items():
            iou = f" lung IoU {f['cell_iou']:.3f}" if "cell_iou" in f else ""
            print(
                f"{variant:14s} {copy:5s} mass inside lungs mean {f['mass_inside_mean']:.3f} "
                f"(median {f['mass_inside_median']:.3f}, min {f['mass_inside_min']:.3f}); box centre inside for "
                f"{f['centre_inside_positives']:.3f} of {f['n_positives']} pneumonias{iou}"
            )
    run = Path("ml/runs") / f"lung_field_{folder.name}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "report.json").write_text(json.dumps(report, indent=1) + "\n")

    if args.write:
        x = np.vstack([design(features[c], True) for c in copies])
        w, b = fit_head(x, np.concatenate([targets.reshape(-1) for _ in copies]))
        channels = features["224"].shape[-1]
        card["lung_field"] = {
            "layer": explainer.layer_name,
            "weights": [round(float(v), 6) for v in w[:channels]],
            "position_weights": [round(float(v), 6) for v in w[channels:]],
            "bias": round(b, 6),
            "fitted_on": f"{len(entries)} validation images with hand-drawn lung boxes ({args.boxes}), "
            "224x224 copies and full-resolution twins",
            "out_of_fold": report["head"],
            "command": "python -m ml.evaluation.lung_field_fit --model "
            f"{args.model} --data {args.data} --hires {args.hires} --write",
        }
        (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote the lung-field head into {folder / 'card.json'}")


if __name__ == "__main__":
    main()
