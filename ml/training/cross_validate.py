"""Patient-wise cross-validation of one training recipe over the manifest's folds.

The shipped split keeps fold 0 for validation; a recipe's operating-point rule
and calibration can only be judged on one split that way, and one split moved
worst-case specificity by ±0.08 between folds. This retrains the recipe with
each other fold held out (same patients per fold as ``splits/v1.csv``), one
fold at a time in a fresh process so memory is returned, and skips folds whose
card already exists, so an interrupted run resumes where it stopped.

Each fold's validation logits (clean and all stress copies) land in
``ml/runs/cv_<name>_f<k>/val_scores.npz``, which is what
``ml.evaluation.threshold_rules`` reads. Fold 0 is the shipped model itself:
``--fold0-model ml/models/v4`` scores it into the same layout without
retraining and without touching its card.

    python -m ml.training.cross_validate --data ../shared/data/chest_xray --name v4 \
        --fold0-model ml/models/v4 --folds 1 2 3 4 5 6 7 -- --max-zoom-in 0.40 --max-stretch 0.35
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ml.training.runs import DEFAULT_MANIFEST, RUNS
from ml.training.split import read_manifest, write_manifest

CV_DIR = RUNS / "cv"


def fold_manifest(manifest: str | Path, fold: int, out_dir: Path = CV_DIR) -> Path:
    """The manifest with ``fold`` as validation and every other fold as training."""
    rows = read_manifest(manifest)
    path = out_dir / f"fold{fold}.csv"
    write_manifest([dict(r, role="val" if r["fold"] == str(fold) else "train") for r in rows], path)
    return path


def fold_run(name: str, fold: int) -> Path:
    """Where a fold's logits and log live (``ml/runs/cv_<name>_f<k>``)."""
    return RUNS / f"cv_{name}_f{fold}"


def score_shipped(model_dir: Path, data: str, manifest: str | Path, name: str) -> Path:
    """Validation logits of an already trained model (clean and every stress copy), its card left alone."""
    import keras

    from ml.serving.inference import batched_logits, compiled_forward
    from ml.training import finalize, perturb
    from ml.training.data import load_inputs
    from ml.training.split import file_sha256, records_for

    target = fold_run(name, 0) / "val_scores.npz"
    if target.exists():
        return target
    records = records_for(read_manifest(manifest), "val")
    forward = compiled_forward(keras.models.load_model(model_dir / "model.keras", compile=False))

    def logits_fn(images):
        return batched_logits(forward, images)

    images = load_inputs(data, records)
    finalize.save_scores(
        target,
        logits_fn(images),
        finalize.perturbed_logits(logits_fn, images, perturb.STRESS),
        file_sha256(manifest),
    )
    return target


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    recipe: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, recipe = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", required=True, help="recipe name used in the run folders, e.g. v4")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(1, 8)))
    parser.add_argument("--fold0-model", help="score this trained model as fold 0 instead of retraining")
    args = parser.parse_args(argv)

    if args.fold0_model:
        print(f"fold 0: {score_shipped(Path(args.fold0_model), args.data, args.manifest, args.name)}", flush=True)
    for fold in args.folds:
        out = CV_DIR / f"cv_{args.name}_f{fold}"
        if (out / "card.json").exists():
            print(f"fold {fold}: {out} exists, skipped", flush=True)
            continue
        manifest = fold_manifest(args.manifest, fold)
        command = [sys.executable, "-m", "ml.training.train", "--data", args.data, "--manifest", str(manifest)]
        command += ["--out", str(out), *recipe]
        print(f"fold {fold}: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
