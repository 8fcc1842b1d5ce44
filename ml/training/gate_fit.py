"""Fit the out-of-distribution gate (``ml/serving/gate.py``) and write its folder.

Everything is fitted on the *training* rows of the patient-wise split manifest
(``ml/splits/v1.csv``); validation rows are only read by ``ml/gate_eval.py``
to count false rejections. The held-out probe images
(``tests/fixtures/make_gate_probes.py``) are never used here either: the
head's negatives are generated below by code that shares nothing with the
probe script, so probe acceptance measures generalisation, not memory.

    .venv/bin/python -m ml.training.gate_fit --data ../shared/data/chest_xray \\
        --weights ../shared/weights/mobilenet_2_5_224_tf_no_top.h5 --out ml/models/gate-v1

Embeddings are cached under ``ml/cache/gate/`` (git-ignored), keyed by the
inputs' content, so re-fitting with other thresholds takes seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ml.serving.decode import decode
from ml.serving.gate import (
    BACKBONE_FILE,
    CARD_FILE,
    CHEST,
    FEATURE_RESOLUTION,
    GATE_VERSION,
    INPUT_SIZE,
    PARAMS_FILE,
    _transform,
    build_feature_model,
    density_distance,
    head_probabilities,
    pixel_statistics,
    save_params,
)
from ml.serving.preprocess import squash_to_input
from ml.training.feature_cache import CACHE as FEATURE_CACHE
from ml.training.feature_cache import cached

SEED = 20261123
PCA_DIMS = 64
HEAD_CLASSES = (CHEST, "rotated", "upside_down", "inverted", "document", "synthetic")
CACHE = FEATURE_CACHE / "gate"

# Thresholds come from *training* chest X-rays only. The density threshold is
# the 99.9th percentile distance of the training images together with their
# augmented copies: the augmentations (framing, contrast, blur) are harsher
# than anything in the validation rows, so they are the margin, and no extra
# factor is applied. The head must give the chest class at least 0.5. GATE.md
# shows what these cost on validation images and under stronger shifts.
DENSITY_QUANTILE = 0.999
DENSITY_MARGIN = 1.0
HEAD_THRESHOLD = 0.5
# Pixel rules: far outside anything in training (measured minima/maxima are
# written to the card next to the thresholds).
MIN_SPREAD = 12.0  # grey levels between the 5th and 95th percentile
MAX_ROUGHNESS = 0.25
MAX_COLOURFULNESS = 8.0


# --- data ---------------------------------------------------------------------


def read_split(manifest: str | Path, role: str) -> list[str]:
    with open(manifest, newline="") as handle:
        return [row["path"] for row in csv.DictReader(handle) if row["role"] == role]


def load_input(path: str | Path) -> np.ndarray:
    """The service's own path: ``ml.serving.decode`` then the shared squash."""
    return squash_to_input(decode(path, target_size=INPUT_SIZE).pixels)


def load_inputs(root: Path, paths: list[str]) -> np.ndarray:
    return np.stack([load_input(root / p) for p in paths])


# --- augmentation of positives ------------------------------------------------


def augment_chest(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible other acquisition of the same frontal chest X-ray.

    The training images are all paediatric AP films from one hospital; adult
    PA films, other detectors and other exports differ in framing, contrast
    and orientation conventions. We cannot show the gate adults, so we widen
    what it treats as normal along those axes instead: left-right flip (still
    frontal), small rotations, zoom in/out with black borders, gamma and
    contrast changes, blur.
    """
    pil = Image.fromarray(image)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.8, 1.2)
    angle = rng.uniform(-10, 10)
    shift = rng.uniform(-0.06, 0.06, size=2) * INPUT_SIZE
    pil = pil.rotate(angle, resample=Image.Resampling.BILINEAR, translate=tuple(shift), fillcolor=0)
    size = max(8, round(INPUT_SIZE * scale))
    resized = pil.resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (INPUT_SIZE, INPUT_SIZE), 0)
    offset = (INPUT_SIZE - size) // 2
    canvas.paste(resized, (offset, offset))  # a negative offset crops: zoomed in
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    x = np.asarray(canvas, dtype=np.float32) / 255.0
    x = x ** rng.uniform(0.7, 1.4)
    low, high = rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0)
    x = low + (high - low) * x
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


# --- negatives for the head (never the probe set's code) ------------------------


def transformed_chests(images: np.ndarray, rng: np.random.Generator, per_kind: int) -> tuple[np.ndarray, list[str]]:
    """Chest X-rays that are no longer usable frontal views as presented."""
    out, labels = [], []
    for kind in ("rotated", "upside_down", "inverted"):
        for index in rng.choice(len(images), size=per_kind, replace=False):
            # Augment first, so the head learns the orientation or polarity,
            # not the exact pixels of upright training images.
            x = augment_chest(images[index], rng)
            if kind == "rotated":
                x = np.rot90(x, k=1 if rng.random() < 0.5 else 3)
            elif kind == "upside_down":
                x = np.flipud(x) if rng.random() < 0.5 else np.rot90(x, 2)
            else:
                x = 255 - x
            out.append(np.ascontiguousarray(x))
            labels.append(kind)
    return np.stack(out), labels


def _font(size: int):
    return ImageFont.load_default(size=size)


def render_document(rng: np.random.Generator) -> np.ndarray:
    """Text lines, tables, boxes: letters, reports, forms, screenshots of software."""
    dark = rng.random() < 0.25
    background = int(rng.integers(0, 40)) if dark else int(rng.integers(215, 256))
    ink = 255 - background if rng.random() < 0.8 else int(rng.integers(80, 180))
    width, height = int(rng.integers(300, 900)), int(rng.integers(300, 1100))
    image = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(5, 40))
    words = [
        "patient",
        "report",
        "date",
        "the",
        "of",
        "chest",
        "result",
        "total",
        "2024",
        "ID",
        "name",
        "value",
        "mg",
        "normal",
        "page",
        "invoice",
        "OK",
        "Cancel",
        "File",
        "Edit",
        "View",
        "settings",
        "x-ray",
    ]
    while y < height - 20:
        style = rng.random()
        size = int(rng.integers(10, 36))
        if style < 0.6:
            line = " ".join(rng.choice(words, size=int(rng.integers(2, 12))))
            draw.text((int(rng.integers(5, 60)), y), line, fill=ink, font=_font(size))
            y += int(size * rng.uniform(1.2, 2.0))
        elif style < 0.8:
            cols = int(rng.integers(2, 6))
            row_h = int(rng.integers(18, 40))
            for c in range(cols + 1):
                xpos = 10 + c * (width - 20) // cols
                draw.line([(xpos, y), (xpos, y + 3 * row_h)], fill=ink, width=1)
            for r in range(4):
                draw.line([(10, y + r * row_h), (width - 10, y + r * row_h)], fill=ink, width=1)
            y += 3 * row_h + 10
        else:
            x0 = int(rng.integers(0, width // 2))
            box = [x0, y, int(rng.integers(x0 + 20, width)), y + int(rng.integers(15, 80))]
            draw.rectangle(box, fill=int(rng.integers(0, 256)), outline=ink)
            y = box[3] + int(rng.integers(4, 20))
    return squash_to_input(image)


def render_synthetic(rng: np.random.Generator) -> np.ndarray:
    """Shapes, gradients, stripes and smooth random fields."""
    kind = rng.integers(0, 5)
    n = INPUT_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    if kind == 0:  # linear or radial gradient
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            field = np.cos(angle) * xx + np.sin(angle) * yy
        else:
            cx, cy = rng.uniform(0, 1, 2)
            field = np.hypot(xx - cx, yy - cy)
    elif kind == 1:  # stripes / checkerboard
        period = rng.uniform(0.03, 0.3)
        field = np.sign(np.sin(xx / period * np.pi)) * (
            np.sign(np.sin(yy / period * np.pi)) if rng.random() < 0.5 else 1
        )
    elif kind == 2:  # smooth random field
        coarse = rng.random((int(rng.integers(3, 20)),) * 2).astype(np.float32)
        field = np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32
        )
    else:  # shapes
        image = Image.new("L", (n, n), int(rng.integers(0, 256)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 12))):
            a = rng.integers(0, n, size=2)
            b = a + rng.integers(10, n // 2, size=2)
            box = [int(a[0]), int(a[1]), int(b[0]), int(b[1])]
            fill = int(rng.integers(0, 256))
            [draw.ellipse, draw.rectangle][int(rng.integers(0, 2))](box, fill=fill)
        if kind == 4:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 8)))
        return np.asarray(image, dtype=np.uint8)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    low, high = sorted(rng.uniform(0, 1, 2))
    field = low + (high - low + 0.05) * field
    return np.clip(np.rint(field * 255), 0, 255).astype(np.uint8)


# --- features -------------------------------------------------------------------


def cached_features(model, images: np.ndarray, name: str, batch: int = 64) -> np.ndarray:
    key = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    path = CACHE / f"{name}-r{FEATURE_RESOLUTION}-{key}.npy"

    def compute() -> np.ndarray:
        out = []
        for start in range(0, len(images), batch):
            x = images[start : start + batch, :, :, None].astype(np.float32)
            out.append(model(x, training=False).numpy())
        return np.concatenate(out)

    return cached(path, compute)


# --- fitting --------------------------------------------------------------------


def fit_density(features: np.ndarray, dims: int = PCA_DIMS) -> dict[str, np.ndarray]:
    z = _transform(features, {})
    mean = z.mean(axis=0)
    centred = z - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variances = singular**2 / (len(z) - 1)
    components = vt[:dims]
    # Residual variance per remaining dimension (probabilistic PCA's sigma^2).
    residual_variance = variances[dims:].sum() / max(1, z.shape[1] - dims)
    return {
        "feature_mean": mean,
        "pca_components": components,
        "pca_variances": variances[:dims],
        "residual_variance": np.float64(residual_variance),
    }


def fit_head(features: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    z = _transform(features, {})
    mean, scale = z.mean(axis=0), z.std(axis=0) + 1e-6
    y = np.array([HEAD_CLASSES.index(label) for label in labels])
    # Balanced classes: chest X-rays outnumber each negative kind several times.
    clf = LogisticRegression(C=0.05, max_iter=3000, class_weight="balanced")
    clf.fit((z - mean) / scale, y)
    return {"head_mean": mean, "head_scale": scale, "head_weights": clf.coef_, "head_bias": clf.intercept_}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/chest_xray")
    parser.add_argument("--manifest", default="ml/splits/v1.csv")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_2_5_224_tf_no_top.h5")
    parser.add_argument("--out", default=f"ml/models/{GATE_VERSION}")
    parser.add_argument("--negatives-per-kind", type=int, default=700)
    args = parser.parse_args(argv)

    import keras

    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    started = time.time()
    root = Path(args.data)
    train_paths = read_split(args.manifest, "train")
    chests = load_inputs(root, train_paths)
    print(f"{len(chests)} training chest X-rays loaded in {time.time() - started:.0f}s", flush=True)
    augmented = np.stack([augment_chest(x, rng) for x in chests])
    rotated_etc, negative_kinds = transformed_chests(chests, rng, args.negatives_per_kind)
    documents = np.stack([render_document(rng) for _ in range(args.negatives_per_kind)])
    synthetic = np.stack([render_synthetic(rng) for _ in range(args.negatives_per_kind)])

    model = build_feature_model(args.weights, FEATURE_RESOLUTION)
    f_chest = cached_features(model, chests, "chest-train")
    f_aug = cached_features(model, augmented, "chest-train-aug")
    f_neg = cached_features(model, rotated_etc, "neg-transformed")
    f_doc = cached_features(model, documents, "neg-document")
    f_syn = cached_features(model, synthetic, "neg-synthetic")
    print(f"features done at {time.time() - started:.0f}s", flush=True)

    positives = np.concatenate([f_chest, f_aug])
    params = fit_density(positives)
    params.update(
        fit_head(
            np.concatenate([positives, f_neg, f_doc, f_syn]),
            [CHEST] * len(positives) + negative_kinds + ["document"] * len(f_doc) + ["synthetic"] * len(f_syn),
        )
    )
    distance = density_distance(positives, params)
    density_threshold = float(np.quantile(distance, DENSITY_QUANTILE) * DENSITY_MARGIN)
    chest_p = head_probabilities(positives, params)[:, 0]
    stats = pixel_statistics(np.concatenate([chests, augmented]))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_weights(out / BACKBONE_FILE)
    save_params(out / PARAMS_FILE, params)
    card = {
        "version": out.name,
        "what": "Out-of-distribution gate: rejects inputs that are not frontal chest X-rays before scoring.",
        "backbone": "keras.applications.MobileNet(alpha=0.25) ImageNet weights, frozen (Apache-2.0), "
        "from ../shared/weights/mobilenet_2_5_224_tf_no_top.h5",
        "resolution": FEATURE_RESOLUTION,
        "features": "sqrt of [global average (256) + 2x2 grid average (1024)] of the last feature map",
        "fitted_on": {
            "manifest": args.manifest,
            "role": "train",
            "chest_xrays": len(chests),
            "augmented_copies": len(augmented),
            "head_negatives": {kind: negative_kinds.count(kind) for kind in ("rotated", "upside_down", "inverted")}
            | {"document": len(f_doc), "synthetic": len(f_syn)},
            "seed": SEED,
        },
        "head": {"classes": list(HEAD_CLASSES), "C": 0.05},
        "density": {"pca_dims": PCA_DIMS, "quantile": DENSITY_QUANTILE, "margin": DENSITY_MARGIN},
        "thresholds": {
            "density_distance": density_threshold,
            "head_chest_probability": HEAD_THRESHOLD,
            "min_spread": MIN_SPREAD,
            "max_roughness": MAX_ROUGHNESS,
            "max_colourfulness": MAX_COLOURFULNESS,
        },
        "training_ranges": {
            "density_distance_max": float(distance.max()),
            "head_chest_probability_min": float(chest_p.min()),
            "head_chest_probability_below_threshold": int((chest_p < HEAD_THRESHOLD).sum()),
            "spread_min": float(stats["spread"].min()),
            "roughness_max": float(stats["roughness"].max()),
        },
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["thresholds"] | card["training_ranges"], indent=2))
    print(f"wrote {out} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
