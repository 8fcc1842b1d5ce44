"""Fit the population check (``ml.serving.population_check``) and measure it leave-one-source-out.

The pneumonia model was trained and validated on children aged 1-5 only. The
population check is a logistic regression on the gate's backbone features
(computed anyway for every scored image) that says how adult a frontal chest
film looks, so the service can mark adult studies "outside the validated
population" instead of silently scoring them.

What it is fitted on:

* children: the *training* rows of ``ml/splits/v1.csv`` (the validation rows
  are only counted, never fitted or used for the threshold), each with one
  degraded copy (see :func:`degrade`);
* adults: ``adult_dev`` (three sources; every image is simply "adult"), each
  with one degraded copy too. One covidrdb source is 224x224 and resampled,
  the others are full resolution: degrading both classes the same way keeps
  "blurry / low resolution" from meaning "adult" (or "child").

How it is measured: for each adult source S, fit on the children plus the two
other sources, choose the threshold from children only (below), and count the
share of S flagged. Children's flag rates are counted on the validation rows,
the official ``chest_xray/val`` images, the full-resolution ``originals`` and
``chest_xray_hires`` (the same training-folder films at full resolution,
decoded and squashed the way the service would).

Threshold: the ``PEDIATRIC_QUANTILE`` quantile of *out-of-fold* scores of the
training children (patient folds of the manifest), so it is set without the
held-out source and without the validation rows.

    .venv/bin/python -m ml.training.population_fit --data ../shared/data --out ml/models/population-v1

Inputs and features are cached under ``ml/cache/population/`` (git-ignored).

What was tried (held-out share flagged for ieee8023 / actualmed / covidrdb;
validation children flagged, worst of the three fits):

* quantile 0.99, C 0.01, degraded copies: 0.908 / 1.000 / 0.991; 1.4 %.
  ieee8023 misses are mostly tight crops of the lung fields from papers.
* the same without degraded copies: 0.927 / 1.000 / 0.985; 1.2 %;
  C 0.001: 0.922; C 0.1: 0.913; C 1: 0.864 (ieee8023).
* global features only (256, no 2x2 grid), C 0.01: 0.922 / 1.000 / 0.974.
* crops up to 20 % per side in the degraded copies: 0.922 / 1.000 / 0.980.
* v4's own global-pooled features instead: 0.854 / 1.000 / 0.985; 1.7 %;
  gate + v4 features together: 0.947 / 1.000 / 0.995; 1.4 % (but needs a
  second feature output from the pneumonia model).
* quantile 0.985 (shipped): 0.966 / 1.000 / 0.995; 1.5 %; without degraded
  copies 0.951 / 1.000 / 0.994; 1.4 %.
* issue 25 (children's *normal* films sent outside more often): re-run on
  2026-12-07, the shipped recipe reads 0.956 / 1.000 / 0.995 and flags 4 of 168
  normal and 4 of 484 pneumonia validation children (first fit); with
  ``--balance`` (normal = pneumonia in the weights and the threshold's
  quantile) 0.956 / 1.000 / 0.994 and the same 4 / 4. Balancing the findings
  does not move it on this split; the confound needs another remedy.
* issue 25, second look (``python -m ml.evaluation.population_groups``): on
  the validation split the flagged normals are all of the ``NORMAL2-`` series
  (4 of 94; 0 of 74 ``IM-`` normals), and among the full-resolution copies
  7 of 288 ``NORMAL2-`` normals against 0 of 264 ``IM-``; squarer originals
  (aspect below 1.2) 12 of 341 against 15 of 1,513. The flagged films look
  older: adult proportions, tightly collimated PA. Remedies
  (``python -m ml.experiments.population_remedies``; held-out ieee8023 /
  actualmed / covidrdb caught, ``NORMAL2-`` validation normals flagged, worst
  fit): the finding direction projected out 0.956 / 1.000 / 0.995, 4 of 94
  (validation children's AUC of normal
  above pneumonia 0.53-0.55 -> 0.46-0.49); children reframed as squarer originals 0.951 / 1.000 / 0.992, 4;
  the four series weighing the same 0.956 / 1.000 / 0.992, 4; the threshold
  at the worst series' quantile 0.893 / 1.000 / 0.986, 4; ``NORMAL2-`` three
  times the weight 0.951 / 1.000 / 0.985, 4. None is shipped: a linear check
  on these features cannot tell these films from adults, and none reaches
  97 % on ieee8023 either.

The planned budget was the 0.99 quantile (1 % of children flagged); it missed
the 95 % target on ieee8023, and 0.985 was chosen after seeing that. The
held-out figures have therefore informed one number, the quantile, and are
slightly optimistic for it; a new adult source is the real test.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ml.serving.gate import DEFAULT_GATE_DIR, INPUT_SIZE, ChestXrayGate
from ml.serving.population_check import CARD_FILE, PARAMS_FILE, POPULATION_VERSION, save_params, transform
from ml.serving.preprocess import squash_to_input
from ml.training.feature_cache import CACHE as FEATURE_CACHE
from ml.training.feature_cache import cached
from ml.training.gate_fit import load_input

SEED = 20261123
CACHE = FEATURE_CACHE / "population"
ADULT_SOURCES = ("ieee8023", "actualmed", "covidrdb")
C = 0.01  # inverse L2 strength on standardised features (0.001-1 tried: see above)
PEDIATRIC_QUANTILE = 0.985  # 1.5 % of training children flagged out of fold; the budget is 2 %
MAX_CROP = 0.06  # largest share cut off each side by degrade()


# --- data ---------------------------------------------------------------------


def manifest_rows(manifest: str | Path, role: str) -> list[dict]:
    with open(manifest, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["role"] == role]


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def adult_source(path: Path) -> str:
    return path.name.split("__", 1)[0]


def cached_inputs(name: str, paths: list[Path]) -> np.ndarray:
    """(N, 224, 224) uint8 serving inputs (``ml.decode`` then the squash), cached by the path list."""
    key = hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:16]
    return cached(CACHE / f"inputs-{name}-{key}.npy", lambda: np.stack([load_input(p) for p in paths]))


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same film through another, lossier export: mild crop, 150-224 px, JPEG q 40-95.

    Applied to children and adults alike, so sharpness, resampling blur and
    JPEG history stop separating the two classes.
    """
    pil = Image.fromarray(image)
    margins = rng.uniform(0.0, MAX_CROP, size=4) * INPUT_SIZE
    pil = pil.crop((margins[0], margins[1], INPUT_SIZE - margins[2], INPUT_SIZE - margins[3]))
    size = int(rng.integers(150, INPUT_SIZE + 1))
    pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.7:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(rng.integers(40, 96)))
        pil = Image.open(buffer)
        pil.load()
    return squash_to_input(pil)


def degraded_copies(images: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([degrade(x, rng) for x in images])


# --- features -------------------------------------------------------------------


def gate_features(gate: ChestXrayGate, images: np.ndarray, name: str) -> np.ndarray:
    """The gate's raw (N, 1280) backbone output, as :meth:`ChestXrayGate.learned_scores` computes it."""
    key = hashlib.sha256(images.tobytes()).hexdigest()[:16]

    def compute() -> np.ndarray:
        return np.concatenate([gate.features(images[i : i + 64]) for i in range(0, len(images), 64)])

    return cached(CACHE / f"gate-{gate.version}-{name}-{key}.npy", compute)


# --- fitting --------------------------------------------------------------------


def sample_weights(y: np.ndarray, groups: np.ndarray, findings: np.ndarray | None = None) -> np.ndarray:
    """Children and adults weigh the same in total, and so does each adult source.

    Without this the 660 covidrdb images (one resampled 224 px source) would
    dominate what "adult" means. With ``findings`` (True for pneumonia), normal
    and pneumonia films also weigh the same within the children and within
    each adult source, so that clear lungs cannot stand for "adult": the
    children are 74 % pneumonia, the adults' normals nearly all one hospital's.
    """
    w = np.zeros(len(y))
    cells = [(y == 0, 1.0)]
    sources = np.unique(groups[y == 1])
    cells += [((y == 1) & (groups == source), 1.0 / len(sources)) for source in sources]
    for mask, total in cells:
        if findings is None:
            w[mask] = total / max(1, mask.sum())
            continue
        for finding in (False, True):
            part = mask & (findings == finding)
            if part.any():
                w[part] = total / (2 * part.sum())
    return w * len(y) / w.sum()


def fit_logistic(
    features: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, findings: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    z = transform(features)
    mean, scale = z.mean(axis=0), z.std(axis=0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=5000)
    clf.fit((z - mean) / scale, y, sample_weight=sample_weights(y, groups, findings))
    return {"mean": mean, "scale": scale, "coef": clf.coef_[0], "intercept": clf.intercept_}


def logits(params: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    z = (transform(features) - params["mean"]) / params["scale"]
    return z @ params["coef"] + float(params["intercept"][0])


class Data:
    """Features of every set, clean and degraded, keyed by set name."""

    def __init__(self, clean: dict[str, np.ndarray], degraded: dict[str, np.ndarray], meta: dict[str, np.ndarray]):
        self.clean, self.degraded, self.meta = clean, degraded, meta


def training_arrays(data: Data, adult_mask: np.ndarray, child_mask: np.ndarray, augment: bool):
    """Features, labels, groups (adult source or "child") and findings (pneumonia) for one fit."""
    parts = [data.clean] + ([data.degraded] if augment else [])
    x, y, g, f = [], [], [], []
    for part in parts:
        x += [part["child_train"][child_mask], part["adult"][adult_mask]]
        y += [np.zeros(child_mask.sum(), int), np.ones(adult_mask.sum(), int)]
        g += [np.full(child_mask.sum(), "child"), data.meta["adult_source"][adult_mask]]
        f += [data.meta["child_pneumonia"][child_mask], data.meta["adult_pneumonia"][adult_mask]]
    return np.concatenate(x), np.concatenate(y), np.concatenate(g), np.concatenate(f)


def balanced_quantile(values: np.ndarray, findings: np.ndarray, q: float) -> float:
    """The ``q`` quantile with normal and pneumonia values weighing the same in total."""
    order = np.argsort(values)
    weights = np.where(findings, 0.5 / max(1, findings.sum()), 0.5 / max(1, (~findings).sum()))[order]
    cumulative = np.cumsum(weights) / weights.sum()
    return float(values[order][np.searchsorted(cumulative, q)])


def fit_with_threshold(data: Data, adult_mask: np.ndarray, c: float, augment: bool, balance: bool = False):
    """Fit on all training children + the given adults; threshold from out-of-fold children.

    Each patient fold of the training children is scored by a model fitted
    without it (adults always in), and the threshold is the
    ``PEDIATRIC_QUANTILE`` quantile of those scores. With ``balance``, normal
    and pneumonia films weigh the same in the fit and in that quantile, so the
    budget of children flagged holds for normal children too, not only on
    average over a set that is three quarters pneumonia.
    """
    folds = data.meta["child_fold"]
    out_of_fold = np.empty(len(folds))

    def fit(child_mask):
        x, y, g, f = training_arrays(data, adult_mask, child_mask, augment)
        return fit_logistic(x, y, g, c, f if balance else None)

    for fold in np.unique(folds):
        params = fit(folds != fold)
        out_of_fold[folds == fold] = logits(params, data.clean["child_train"][folds == fold])
    params = fit(np.ones(len(folds), bool))
    if balance:
        return params, balanced_quantile(out_of_fold, data.meta["child_pneumonia"], PEDIATRIC_QUANTILE)
    return params, float(np.quantile(out_of_fold, PEDIATRIC_QUANTILE))


def flag_counts(params, threshold: float, features: np.ndarray) -> dict:
    flagged = int((logits(params, features) >= threshold).sum())
    return {"n": len(features), "flagged": flagged, "share": flagged / max(1, len(features))}


def child_rates(data: Data, params, threshold: float) -> dict:
    names = ("child_val", "chest_xray_val", "originals", "hires_train_role", "hires_val_role")
    rates = {name: flag_counts(params, threshold, data.clean[name]) for name in names}
    pneumonia = data.meta["child_val_pneumonia"]
    rates["child_val_normal"] = flag_counts(params, threshold, data.clean["child_val"][~pneumonia])
    rates["child_val_pneumonia"] = flag_counts(params, threshold, data.clean["child_val"][pneumonia])
    return rates


def leave_one_source_out(data: Data, c: float, augment: bool, balance: bool = False) -> dict:
    sources = data.meta["adult_source"]
    table = {}
    for held_out in ADULT_SOURCES:
        params, threshold = fit_with_threshold(data, sources != held_out, c, augment, balance)
        table[held_out] = {
            "threshold_logit": threshold,
            "held_out": flag_counts(params, threshold, data.clean["adult"][sources == held_out]),
            "held_out_degraded": flag_counts(params, threshold, data.degraded["adult"][sources == held_out]),
            "children": child_rates(data, params, threshold),
        }
    return table


# --- command --------------------------------------------------------------------


def load_data(root: Path, manifest: str | Path, gate: ChestXrayGate) -> Data:
    chest = root / "chest_xray"
    train_rows = manifest_rows(manifest, "train")
    val_rows = manifest_rows(manifest, "val")
    train_role = {row["path"].split("/", 1)[1] for row in train_rows}  # NORMAL/<file>
    hires = image_files(root / "chest_xray_hires" / "train")
    hires_in_train = np.array([f"{p.parent.name}/{p.name}" in train_role for p in hires])
    adults = image_files(root / "adult_dev")
    paths = {
        "child_train": [chest / row["path"] for row in train_rows],
        "child_val": [chest / row["path"] for row in val_rows],
        "chest_xray_val": image_files(chest / "val"),
        "originals": image_files(root / "originals"),
        "hires": hires,
        "adult": adults,
    }
    clean, degraded = {}, {}
    for name, files in paths.items():
        started = time.time()
        images = cached_inputs(name, files)
        clean[name] = gate_features(gate, images, name)
        if name in ("child_train", "adult"):
            degraded[name] = gate_features(gate, degraded_copies(images, SEED), f"{name}-degraded")
        print(f"  {name}: {len(files)} images, features in {time.time() - started:.0f}s", flush=True)
    clean["hires_train_role"] = clean["hires"][hires_in_train]
    clean["hires_val_role"] = clean["hires"][~hires_in_train]
    meta = {
        "child_fold": np.array([int(row["fold"]) for row in train_rows]),
        "child_pneumonia": np.array([row["label"] == "PNEUMONIA" for row in train_rows]),
        "child_val_pneumonia": np.array([row["label"] == "PNEUMONIA" for row in val_rows]),
        "adult_pneumonia": np.array([p.parent.name == "PNEUMONIA" for p in adults]),
        "adult_source": np.array([adult_source(p) for p in adults]),
        "adult_files": np.array([str(p.relative_to(root)) for p in adults]),
    }
    return Data(clean, degraded, meta)


def print_table(table: dict) -> None:
    print(f"{'held-out source':<16}{'n':>6}{'flagged':>9}{'share':>8}{'degraded':>10}   children flagged (share)")
    for source, row in table.items():
        held, deg = row["held_out"], row["held_out_degraded"]
        kids = "  ".join(f"{k}={v['flagged']}/{v['n']}" for k, v in row["children"].items())
        print(f"{source:<16}{held['n']:>6}{held['flagged']:>9}{held['share']:>8.3f}{deg['share']:>10.3f}   {kids}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--manifest", default="ml/splits/v1.csv")
    parser.add_argument("--gate", default=str(DEFAULT_GATE_DIR))
    parser.add_argument("--out", default=f"ml/models/{POPULATION_VERSION}")
    parser.add_argument("--C", type=float, default=C)
    parser.add_argument("--no-augment", action="store_true", help="fit on clean images only (for comparison)")
    parser.add_argument(
        "--balance",
        action="store_true",
        help="normal and pneumonia films weigh the same in the fit and the threshold (not population-v1's recipe)",
    )
    args = parser.parse_args(argv)
    augment = not args.no_augment
    balance = args.balance

    started = time.time()
    gate = ChestXrayGate.load(args.gate)
    data = load_data(Path(args.data), args.manifest, gate)
    print(f"features ready at {time.time() - started:.0f}s", flush=True)

    table = leave_one_source_out(data, args.C, augment, balance)
    print_table(table)
    print(f"leave-one-source-out done at {time.time() - started:.0f}s", flush=True)

    everyone = np.ones(len(data.meta["adult_source"]), bool)
    params, threshold = fit_with_threshold(data, everyone, args.C, augment, balance)
    children = child_rates(data, params, threshold)
    adult_scores = logits(params, data.clean["adult"])
    missed = data.meta["adult_files"][adult_scores < threshold]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_params(out / PARAMS_FILE, params)
    card = {
        "version": out.name,
        "what": "Population check: flags frontal chest X-rays that look adult, i.e. outside the validated "
        "population (children aged 1-5). Not a diagnosis and not an age estimate.",
        "features": f"{gate.version} backbone output (N, 1280) as returned by ChestXrayGate.features "
        "(global + 2x2 grid average of MobileNet(alpha=0.25) at 112 px), square-rooted, standardised",
        "gate_version": gate.version,
        "model": "logistic regression, L2",
        "C": args.C,
        "threshold_logit": threshold,
        "threshold_probability": float(1 / (1 + np.exp(-threshold))),
        "threshold_rule": f"{PEDIATRIC_QUANTILE} quantile of out-of-fold logits of training children "
        "(patient folds of the manifest, adults always in the fit)"
        + ("; normal and pneumonia children weigh the same in it" if balance else ""),
        "fitted_on": {
            "manifest": args.manifest,
            "children": "train role",
            "n_children": len(data.clean["child_train"]),
            "n_adults": {s: int((data.meta["adult_source"] == s).sum()) for s in ADULT_SOURCES},
            "degraded_copies": augment,
            "sample_weights": "children = adults in total; adult sources equal"
            + ("; normal = pneumonia within the children and within each adult source" if balance else ""),
            "seed": SEED,
        },
        "leave_one_source_out": table,
        "children_flagged": children,
        "adults_flagged_in_fit": flag_counts(params, threshold, data.clean["adult"]),
        "adults_missed_in_fit": missed.tolist(),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"threshold_logit": threshold, "children_flagged": children}, indent=2))
    print(f"wrote {out} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
