"""Issue 25, item 6: remedies tried for the population check sending normal children outside.

Each remedy is fitted the way ``ml.training.population_fit`` fits the shipped
check (children of the training role plus degraded copies, adults of two
sources, threshold at the 0.985 quantile of out-of-fold children) and
measured leave-one-source-out, with the validation children's flags per
series (``ml.evaluation.population_groups``):

    python -m ml.experiments.population_remedies --data ../shared/data baseline finding-removed \
        reframed series-balanced worst-series normal2-x3

* ``finding-removed``: the difference of the pneumonia and normal children's
  mean (standardised) features is projected out before the fit, so no
  linear score can tell clear lungs from pneumonia on average.
* ``reframed``: a third copy of each child with up to 30 % of its width cut
  and squashed back, as a squarer original would be.
* ``series-balanced``: the four series of children weigh the same.
* ``worst-series``: the threshold is the highest of the series' quantiles.
* ``normal2-x3``: the ``NORMAL2-`` normal series weighs three times as much.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import ml.training.population_fit as fit
from ml.evaluation.population_groups import SERIES, series
from ml.serving.gate import INPUT_SIZE, ChestXrayGate
from ml.serving.population_check import transform
from ml.serving.preprocess import squash_to_input
from ml.training.feature_cache import cached

REMEDIES = ("baseline", "finding-removed", "reframed", "series-balanced", "worst-series", "normal2-x3")


def reframed_features(gate: ChestXrayGate, images: np.ndarray, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)

    def cut(image: np.ndarray) -> np.ndarray:
        width = rng.uniform(0.0, 0.3) * INPUT_SIZE
        left = width * rng.uniform()
        return squash_to_input(Image.fromarray(image).crop((left, 0, INPUT_SIZE - (width - left), INPUT_SIZE)))

    def compute() -> np.ndarray:
        out = np.stack([cut(x) for x in images])
        return np.concatenate([gate.features(out[i : i + 64]) for i in range(0, len(out), 64)])

    return cached(fit.CACHE / f"experiment-reframed-{seed}.npy", compute)


def weights(y: np.ndarray, groups: np.ndarray, boost: dict[str, float]) -> np.ndarray:
    """Adult sources equal; children's series equal (times ``boost``); children = adults in total."""
    w = np.zeros(len(y))
    kids = np.unique(groups[y == 0])
    share = {k: boost.get(k, 1.0) for k in kids}
    for k in kids:
        w[(y == 0) & (groups == k)] = share[k] / sum(share.values()) / ((y == 0) & (groups == k)).sum()
    sources = np.unique(groups[y == 1])
    for s in sources:
        w[(y == 1) & (groups == s)] = 1 / len(sources) / ((y == 1) & (groups == s)).sum()
    return w * len(y) / w.sum()


def fit_one(x, y, groups, findings, remedy: str) -> dict:
    z = transform(x)
    mean, scale = z.mean(axis=0), z.std(axis=0) + 1e-6
    zs = (z - mean) / scale
    direction = None
    if remedy == "finding-removed":
        kids = zs[y == 0]
        direction = kids[findings[y == 0]].mean(0) - kids[~findings[y == 0]].mean(0)
        direction /= np.linalg.norm(direction)
        zs = zs - np.outer(zs @ direction, direction)
    if remedy in ("series-balanced", "worst-series", "normal2-x3"):
        w = weights(y, groups, {SERIES[1]: 3.0} if remedy == "normal2-x3" else {})
    else:
        w = fit.sample_weights(y, np.where(y == 0, "child", groups))
    clf = LogisticRegression(C=fit.C, max_iter=5000).fit(zs, y, sample_weight=w)
    coef = clf.coef_[0]
    if direction is not None:
        coef = coef - direction * (direction @ coef)  # the same score on unprojected features
    return {"mean": mean, "scale": scale, "coef": coef, "intercept": clf.intercept_}


def run(data: fit.Data, child_series: np.ndarray, val_series: np.ndarray, extra: np.ndarray | None, remedy: str):
    sources, folds = data.meta["adult_source"], data.meta["child_fold"]

    def arrays(adult_mask, child_mask):
        parts = [
            (data.clean["child_train"], data.clean["adult"]),
            (data.degraded["child_train"], data.degraded["adult"]),
        ]
        if remedy == "reframed":
            parts.append((extra, None))
        x, y, g, f = [], [], [], []
        for kids, adults in parts:
            x.append(kids[child_mask])
            y.append(np.zeros(child_mask.sum(), int))
            g.append(child_series[child_mask])
            f.append(data.meta["child_pneumonia"][child_mask])
            if adults is not None:
                x.append(adults[adult_mask])
                y.append(np.ones(adult_mask.sum(), int))
                g.append(sources[adult_mask])
                f.append(data.meta["adult_pneumonia"][adult_mask])
        return np.concatenate(x), np.concatenate(y), np.concatenate(g), np.concatenate(f)

    table = {}
    for held_out in fit.ADULT_SOURCES:
        adult_mask = sources != held_out
        out_of_fold = np.empty(len(folds))
        for fold in np.unique(folds):
            params = fit_one(*arrays(adult_mask, folds != fold), remedy)
            out_of_fold[folds == fold] = fit.logits(params, data.clean["child_train"][folds == fold])
        params = fit_one(*arrays(adult_mask, np.ones(len(folds), bool)), remedy)
        if remedy == "worst-series":
            threshold = max(float(np.quantile(out_of_fold[child_series == s], fit.PEDIATRIC_QUANTILE)) for s in SERIES)
        else:
            threshold = float(np.quantile(out_of_fold, fit.PEDIATRIC_QUANTILE))
        val_logits = fit.logits(params, data.clean["child_val"])
        flagged = val_logits >= threshold
        table[held_out] = {
            # 0.5: the check's score does not rank normal children above pneumonia (or below) on average.
            "auc_normal_above_pneumonia": round(float(roc_auc_score(~data.meta["child_val_pneumonia"], val_logits)), 3),
            "held_out_caught": round(
                fit.flag_counts(params, threshold, data.clean["adult"][sources == held_out])["share"], 3
            ),
            "validation_children": f"{int(flagged.sum())}/{len(flagged)}",
            **{s: f"{int(flagged[val_series == s].sum())}/{int((val_series == s).sum())}" for s in SERIES},
        }
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--manifest", default="ml/splits/v1.csv")
    parser.add_argument("remedies", nargs="+", choices=REMEDIES)
    args = parser.parse_args(argv)
    gate = ChestXrayGate.load()
    data = fit.load_data(Path(args.data), args.manifest, gate)
    train_rows = fit.manifest_rows(args.manifest, "train")
    child_series = np.array([series(r["path"], r["label"]) for r in train_rows])
    val_series = np.array([series(r["path"], r["label"]) for r in fit.manifest_rows(args.manifest, "val")])
    extra = None
    if "reframed" in args.remedies:
        chest = Path(args.data) / "chest_xray"
        images = fit.cached_inputs("child_train", [chest / r["path"] for r in train_rows])
        extra = reframed_features(gate, images)
    for remedy in args.remedies:
        for held_out, row in run(data, child_series, val_series, extra, remedy).items():
            print(remedy, held_out, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
