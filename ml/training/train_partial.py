"""Xception with its exit flow fine-tuned, trained from cached middle-flow activations.

    python -m ml.training.train_partial --data ../shared/data/chest_xray --out ml/runs/candidates/xception_ft

Fine-tuning all of Xception is out of reach on a 2-core CPU: its forward pass
alone costs 40-75 ms/image. But when blocks 1-12 (entry and middle flow) stay
frozen at their ImageNet weights, their output for a given input never
changes, so it is computed once per image and cached under ``ml/cache/``
(14x14x728, float16): the clean training images plus a few augmented copies,
drawn with the shipped recipe's augmentation. The exit flow (blocks 13-14) and
the two heads, 6.8 M parameters, are then trained on those activations with
the shipped recipe's losses, class weights, schedule and early stopping
(``ml.training.train.fit``), at about a twentieth of a full step's cost. Each epoch
draws one cached copy per image at random.

The result is the whole Xception with the same uint8-in, logits-out contract
as every other candidate, so its calibration, threshold and stress test run
through the same code (``ml.training.finalize.build_card``). It is a comparison
candidate and a possible teacher, not a shippable CPU model (80 MB, ~100
ms/image).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ml.training import perturb
from ml.training.data import load_inputs
from ml.training.feature_cache import CACHE, activations, cached
from ml.training.runs import DEFAULT_MANIFEST, limited, log, start_run, training_record
from ml.training.split import file_sha256, read_manifest, records_for
from ml.training.train import TrainConfig, fit, targets

CUT_LAYER = "block13_sepconv1_act"  # first layer of the exit flow; its input is the last middle-flow block's output


def split_at(model, layer_name: str = CUT_LAYER):
    """(bottom, top): two models sharing ``model``'s layers, cut at the input of ``layer_name``."""
    import keras

    cut = model.get_layer(layer_name).input
    bottom = keras.Model(model.inputs[0], cut, name="frozen_bottom")
    top = keras.Model(cut, {name: model.get_layer(name).output for name in ("pneumonia", "viral")}, name="top")
    return bottom, top


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--augmented-copies", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--max-zoom-in", type=float, default=0.25)
    parser.add_argument("--max-stretch", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--stress", choices=("full", "mild"), default="full")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train/val images (smoke runs)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from ml.training import finalize
    from ml.training.model import build_xception

    started = time.time()
    out = Path(args.out)
    run_dir, log_stream, command = start_run(out, "ml.training.train_partial", argv)
    config = TrainConfig(
        arch="xception",
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.learning_rate,
        max_zoom_in=args.max_zoom_in,
        max_stretch=args.max_stretch,
        seed=args.seed,
    )
    keras.utils.set_random_seed(config.seed)
    rows = read_manifest(args.manifest)
    train_records, val_records = records_for(rows, "train"), records_for(rows, "val")
    if args.limit:
        train_records, val_records = limited(train_records, args.limit), limited(val_records, args.limit)
    train_images = load_inputs(args.data, train_records)
    val_images = load_inputs(args.data, val_records)
    y, viral = targets(train_records)
    val_y, val_viral = targets(val_records)

    model = build_xception(dropout=config.dropout)
    bottom, top = split_at(model)
    for layer in model.layers:
        layer.trainable = False
    for layer in top.layers:
        layer.trainable = True
    augment = {"max_zoom_in": config.max_zoom_in, "max_stretch": config.max_stretch}
    tag = f"xception_b12_{file_sha256(args.manifest)[:12]}_n{len(train_records)}"
    cache_started = time.time()
    copies = [
        cached(
            CACHE / f"{tag}_copy{k}_z{config.max_zoom_in}_s{config.max_stretch}.npy",
            lambda k=k: activations(bottom, train_images, augment if k else None, config.seed + k, stream=log_stream),
        )
        for k in range(1 + args.augmented_copies)
    ]
    val_acts = cached(
        CACHE / f"{tag}_val{len(val_records)}.npy", lambda: activations(bottom, val_images, None, 0, stream=log_stream)
    )
    cache_seconds = time.time() - cache_started
    log(f"activations of {len(copies)} train copies and val: {cache_seconds:.0f}s", log_stream)

    top_forward = tf.function(lambda x: top(x, training=False), reduce_retracing=True)
    fit_started = time.time()
    history = fit(
        top,
        copies,
        y,
        viral,
        val_acts.astype(np.float32),
        val_y,
        val_viral,
        config,
        log_stream=log_stream,
        augment=False,
        forward=top_forward,
    )
    fit_seconds = time.time() - fit_started
    del copies

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    card = finalize.build_card(
        model=model,
        version=out.name,
        arch="xception_exit_flow_ft",
        val_images=val_images,
        val_records=val_records,
        model_file=out / "model.keras",
        scores_file=run_dir / "val_scores.npz",
        stress=perturb.STRESS if args.stress == "full" else perturb.MILD,
        log_stream=log_stream,
        training=training_record(
            args.manifest,
            "ml.training.train_partial",
            command,
            train_records,
            val_records,
            config=asdict(config),
            augmented_copies=args.augmented_copies,
            trainable_parameters=int(sum(np.prod(w.shape) for w in top.trainable_weights)),
            history=history,
            epochs_run=len(history),
            best_epoch=max(history, key=lambda h: (h["val_auc"], -h["val_loss"]))["epoch"],
            cache_seconds=round(cache_seconds),
            fit_seconds=round(fit_seconds),
        ),
    )
    card["training"]["total_seconds"] = round(time.time() - started)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"wrote {out} in {card['training']['total_seconds']}s", log_stream)


if __name__ == "__main__":
    main()
