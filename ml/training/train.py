"""Train, calibrate and package a screening model from the split manifest.

    python -m ml.training.train --data ../shared/data/chest_xray --out ml/models/<version>

Steps: read the patient-wise manifest (``ml/splits/v1.csv``; never tune on
anything outside its validation rows), fine-tune the network with
chest-X-ray augmentation and class-balanced loss, keep the epoch with the best
validation AUC (early stopping), then fit the temperature and choose the
operating threshold on validation, measure speed, and write ``model.keras``
plus ``card.json``. Checkpoints and the log go to ``ml/runs/<version>/``
(git-ignored).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ml.training.data import load_inputs
from ml.training.runs import DEFAULT_MANIFEST, limited, log, measure_speed, start_run, training_record
from ml.training.split import read_manifest, records_for


@dataclass
class TrainConfig:
    arch: str = "mobilenet_025"
    epochs: int = 18
    patience: int = 5  # epochs without a better validation AUC before stopping
    batch_size: int = 32
    learning_rate: float = 1e-3  # peak, after one warm-up epoch; cosine decay to zero
    weight_decay: float = 1e-4
    viral_loss_weight: float = 0.5
    label_smoothing: float = 0.0
    augment_strength: float = 1.0
    max_zoom_in: float = 0.10  # magnifying side of the zoom range (v1: 0.10, the same as zooming out)
    max_stretch: float = 0.0  # log-range of the x/y aspect change (v1: none)
    dropout: float = 0.2
    seed: int = 20261123
    # "screen": both heads, early stopping on pneumonia AUC (the shipped recipe). "viral": a specialist
    # trained on pneumonia images alone with the viral loss only, stopping on viral AUC; it tests whether
    # a backbone of its own would lift P(viral | pneumonia), and is not a screener by itself.
    task: str = "screen"


TASKS = ("screen", "viral")


def targets(records) -> tuple[np.ndarray, np.ndarray]:
    """Pneumonia target (0/1) and viral target (1 virus, 0 bacteria, -1 = not a pneumonia image)."""
    y = np.array([r.target for r in records], dtype=np.float32)
    viral = np.array(
        [1.0 if r.subtype == "virus" else 0.0 if r.subtype == "bacteria" else -1.0 for r in records], dtype=np.float32
    )
    return y, viral


def class_weights(y: np.ndarray) -> tuple[float, float]:
    """Weights that give both classes equal total weight (normal is the ~1:2.9 minority)."""
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if not positives or not negatives:  # one class only (the viral specialist sees pneumonia alone)
        return 1.0, 1.0
    return len(y) / (2.0 * negatives), len(y) / (2.0 * positives)


def make_train_step(
    model,
    optimizer,
    weights: tuple[float, float],
    viral_weights: tuple[float, float],
    config: TrainConfig,
    augment: bool = True,
):
    """A compiled step: augment, forward, class-weighted losses, update. Returns the batch loss."""
    import tensorflow as tf

    from ml.training.augment import augment_batch

    w_normal, w_pneumonia = weights
    w_bacteria, w_virus = viral_weights
    smoothing = config.label_smoothing

    @tf.function(reduce_retracing=True)
    def step(images, y, viral):
        if augment:
            images = augment_batch(images, config.augment_strength, config.max_zoom_in, config.max_stretch)
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            y_smooth = y * (1.0 - smoothing) + 0.5 * smoothing
            weight = tf.where(y > 0.5, w_pneumonia, w_normal)
            pneumonia_loss = tf.reduce_sum(weight * tf.nn.sigmoid_cross_entropy_with_logits(y_smooth, out["pneumonia"]))
            pneumonia_loss /= tf.reduce_sum(weight)
            has_subtype = viral >= 0.0
            viral_weight = tf.where(has_subtype, tf.where(viral > 0.5, w_virus, w_bacteria), 0.0)
            viral_target = tf.maximum(viral, 0.0)
            viral_loss = tf.reduce_sum(
                viral_weight * tf.nn.sigmoid_cross_entropy_with_logits(viral_target, out["viral"])
            )
            viral_loss /= tf.maximum(tf.reduce_sum(viral_weight), 1e-6)
            loss = viral_loss if config.task == "viral" else pneumonia_loss + config.viral_loss_weight * viral_loss
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=False))
        return loss

    return step


def fit(
    model,
    train_images,
    y,
    viral,
    val_images,
    val_y,
    val_viral,
    config: TrainConfig,
    checkpoint: Path | None = None,
    log_stream=None,
    augment: bool = True,
    forward=None,
) -> list[dict]:
    """Train with early stopping on validation AUC; leaves the best epoch's weights in ``model``.

    ``train_images`` is one uint8 array, or a list of equally long arrays holding
    cached copies of the same inputs (clean and augmented activations, see
    ``ml.training.train_partial``): each epoch then draws one copy per image at random.
    ``forward`` scores ``val_images`` (default: the uint8 serving function).
    """
    import keras
    import tensorflow as tf

    from ml.serving.inference import batched_logits, compiled_forward
    from ml.statistics.metrics import roc_auc

    copies = train_images if isinstance(train_images, list) else None
    n_train = len(copies[0]) if copies else len(train_images)
    steps_per_epoch = int(np.ceil(n_train / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * (config.epochs - 1)),
        warmup_target=config.learning_rate,
        warmup_steps=steps_per_epoch,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    has_subtype = viral >= 0
    step = make_train_step(
        model,
        optimizer,
        class_weights(y),
        class_weights(viral[has_subtype]) if has_subtype.any() else (1.0, 1.0),
        config,
        augment,
    )
    forward = forward or compiled_forward(model)
    rng = np.random.default_rng(config.seed)
    history, best, best_weights, stale = [], None, None, 0
    for epoch in range(1, config.epochs + 1):
        started = time.time()
        order = rng.permutation(n_train)  # a fresh, seeded order per epoch; the split never moves
        copy_of = rng.integers(len(copies), size=n_train) if copies else None
        losses = []
        for index, start in enumerate(range(0, len(order), config.batch_size)):
            batch = order[start : start + config.batch_size]
            if copies:
                inputs = np.stack([copies[c][i] for i, c in zip(batch, copy_of[batch], strict=False)]).astype(
                    np.float32
                )
            else:
                inputs = train_images[batch]
            losses.append(float(step(tf.constant(inputs), tf.constant(y[batch]), tf.constant(viral[batch]))))
            if log_stream is not None and (index + 1) % 25 == 0:
                log(f"  epoch {epoch} step {index + 1}/{steps_per_epoch} loss {np.mean(losses[-25:]):.4f}", log_stream)
        logits = batched_logits(forward, val_images)
        val_pneumonia = logits["pneumonia"]
        z = val_pneumonia
        val_loss = float(np.mean(np.logaddexp(0, z) - val_y * z))
        is_pneumonia = val_viral >= 0
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auc": roc_auc(val_y, val_pneumonia),
            "val_viral_auc": roc_auc(val_viral[is_pneumonia], logits["viral"][is_pneumonia])
            if is_pneumonia.any()
            else None,
            "seconds": round(time.time() - started, 1),
        }
        if config.task == "viral":
            v, zv = val_viral[is_pneumonia], logits["viral"][is_pneumonia]
            record["val_viral_loss"] = float(np.mean(np.logaddexp(0, zv) - v * zv))
            key = (record["val_viral_auc"], -record["val_viral_loss"])
        else:
            key = (record["val_auc"], -val_loss)
        history.append(record)
        improved = best is None or key > best
        if improved:
            best, best_weights, stale = key, [w.copy() for w in model.get_weights()], 0
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                model.save_weights(checkpoint)
        else:
            stale += 1
        log(
            f"epoch {epoch}/{config.epochs} train_loss {record['train_loss']:.4f} val_loss {val_loss:.4f} "
            f"val_auc {record['val_auc']:.4f} viral_auc {record['val_viral_auc'] or float('nan'):.4f} "
            f"{record['seconds']}s{' *best*' if improved else ''}",
            log_stream,
        )
        if stale >= config.patience:
            log(f"early stop: no better validation AUC for {config.patience} epochs", log_stream)
            break
    model.set_weights(best_weights)
    return history


def pneumonia_only(records) -> list:
    return [r for r in records if r.subtype in ("virus", "bacteria")]


def viral_specialist_card(model, version, config, val_images, val_records, training, run_dir, log_stream) -> dict:
    """What a viral specialist is judged on: P(viral | pneumonia) on the validation pneumonia images.

    Its logits are saved like a screener's (``val_scores.npz``, ``clean__viral``) so that
    ``ml.evaluation.compare`` can pair it with a screener; it gets no threshold or temperature of its own.
    """
    from ml.serving.calibration import sigmoid
    from ml.serving.inference import batched_logits, compiled_forward
    from ml.training.finalize import save_scores, viral_report

    logits = batched_logits(compiled_forward(model), val_images)
    save_scores(run_dir / "val_scores.npz", logits, {}, training["manifest_sha256"])
    best = max(training["history"], key=lambda h: (h["val_viral_auc"], -h["val_viral_loss"]))
    training["best_epoch"] = best["epoch"]
    report = viral_report(sigmoid(logits["viral"]), val_records)
    log(f"viral specialist: {report}", log_stream)
    return {
        "version": version,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": f"{config.arch} (viral specialist)",
        "parameters": int(model.count_params()),
        "outputs": {"viral": "logit of P(viral | pneumonia); the pneumonia output is untrained"},
        "validation": {"viral": report},
        "speed": measure_speed(model, val_images.shape[1]),
        "training": training,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train/NORMAL and train/PNEUMONIA")
    parser.add_argument("--out", required=True, help="model folder to write, e.g. ml/models/v1")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    defaults = TrainConfig()
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train/val images (smoke runs)")
    args = parser.parse_args(argv)
    config = TrainConfig(**{field: getattr(args, field) for field in asdict(defaults)})
    if config.task not in TASKS:
        parser.error(f"--task must be one of {', '.join(TASKS)}")

    import keras

    from ml.training import finalize
    from ml.training.model import BUILDERS

    started = time.time()
    out = Path(args.out)
    version = out.name
    run_dir, log_stream, command = start_run(out, "ml.training.train", argv)
    log(f"config {json.dumps(asdict(config))}", log_stream)
    keras.utils.set_random_seed(config.seed)

    rows = read_manifest(args.manifest)
    train_records, val_records = records_for(rows, "train"), records_for(rows, "val")
    if args.limit:
        train_records, val_records = limited(train_records, args.limit), limited(val_records, args.limit)
    if config.task == "viral":
        train_records, val_records = pneumonia_only(train_records), pneumonia_only(val_records)
    train_images = load_inputs(args.data, train_records)
    val_images = load_inputs(args.data, val_records)
    y, viral = targets(train_records)
    val_y, val_viral = targets(val_records)
    log(f"loaded {len(train_images)} train / {len(val_images)} val images in {time.time() - started:.0f}s", log_stream)

    model = BUILDERS[config.arch](dropout=config.dropout)
    fit_started = time.time()
    history = fit(
        model,
        train_images,
        y,
        viral,
        val_images,
        val_y,
        val_viral,
        config,
        checkpoint=run_dir / "best.weights.h5",
        log_stream=log_stream,
    )
    fit_seconds = time.time() - fit_started

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    training = training_record(
        args.manifest,
        "ml.training.train",
        command,
        train_records,
        val_records,
        config=asdict(config),
        history=history,
        epochs_run=len(history),
        fit_seconds=round(fit_seconds),
        total_seconds=None,
    )
    if config.task == "viral":
        card = viral_specialist_card(model, version, config, val_images, val_records, training, run_dir, log_stream)
    else:
        training["best_epoch"] = max(history, key=lambda h: (h["val_auc"], -h["val_loss"]))["epoch"]
        card = finalize.build_card(
            model=model,
            version=version,
            arch=config.arch,
            val_images=val_images,
            val_records=val_records,
            model_file=out / "model.keras",
            scores_file=run_dir / "val_scores.npz",
            training=training,
            log_stream=log_stream,
        )
    card["training"]["total_seconds"] = round(time.time() - started)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"wrote {out}/model.keras and card.json in {card['training']['total_seconds']}s total", log_stream)


if __name__ == "__main__":
    main()
