"""Score a model folder on any NORMAL/PNEUMONIA image folder and write a report.

    python -m ml.evaluation.evaluate --model ml/models/v4 --data DIR --out OUTDIR
        [--twins DIR]                 # same files at another resolution: score agreement
        [--manifest CSV --role val]   # keep only the files of one manifest role

Images of any size go through exactly the serving path (grey, squash to
224×224, the model, card calibration and threshold). Writes ``metrics.json``,
``scores.csv``, ``roc.png``, ``pr.png``, ``calibration.png``,
``confusion.png`` and ``report.md`` into OUTDIR. Nothing is refitted on the
evaluated data: threshold, temperature and bias come from the model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from ml.evaluation import plots
from ml.statistics.metrics import bootstrap_ci, reliability_table, roc_auc, screening_report
from ml.training.data import load_inputs, scan_folder
from ml.training.split import read_manifest


def _clean(value):
    """JSON has no NaN: undefined metrics (e.g. AUC with one class) become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _keep_manifest_role(records, manifest: str, role: str):
    wanted = {(row["label"], Path(row["path"]).name) for row in read_manifest(manifest) if row["role"] == role}
    return [r for r in records if (r.label, Path(r.path).name) in wanted]


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    twins: str | Path | None = None,
    manifest: str | None = None,
    role: str = "val",
    n_resamples: int = 2000,
) -> dict:
    from ml.serving.inference import Screener

    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    screener = Screener.load(model_dir)
    records = scan_folder(data_dir)
    if manifest:
        records = _keep_manifest_role(records, manifest, role)
        if not records:
            raise ValueError(f"no file of {data_dir} has role {role!r} in {manifest}")
    images = load_inputs(data_dir, records, screener.input_size)
    probability, viral = screener.probabilities(images)
    y = np.array([r.target for r in records])
    patients = [r.patient for r in records]

    metrics = {"model_version": screener.version, "model_dir": str(model_dir), "data": str(data_dir)}
    metrics.update(screening_report(y, probability, screener.threshold, patients, n_resamples))
    metrics["temperature"] = screener.temperature
    metrics["bias"] = screener.bias
    metrics["reliability"] = reliability_table(y, probability)

    # P(viral | pneumonia) on the pneumonia images whose names say bacteria or virus.
    metrics["viral_auc"] = metrics["viral_auc_ci"] = metrics["viral_accuracy"] = None
    metrics["viral_n"] = 0
    if viral is not None:
        chosen = np.array([r.subtype in ("virus", "bacteria") for r in records])
        if chosen.any():
            v = np.array([r.subtype == "virus" for r in records])[chosen].astype(int)
            s = viral[chosen]
            metrics["viral_n"] = int(chosen.sum())
            metrics["viral_accuracy"] = float(np.mean((s >= 0.5) == v))
            metrics["viral_auc"] = roc_auc(v, s)
            groups = np.asarray(patients)[chosen]
            metrics["viral_auc_ci"] = list(bootstrap_ci(lambda i: roc_auc(v[i], s[i]), groups, n_resamples))

    if twins:
        metrics["twins"] = twin_consistency(screener, records, probability, twins)

    with (out_dir / "scores.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "subtype", "patient", "probability", "predicted", "viral_probability"])
        for i, r in enumerate(records):
            writer.writerow(
                [
                    r.path,
                    r.label,
                    r.subtype or "",
                    r.patient,
                    f"{probability[i]:.6f}",
                    "PNEUMONIA" if probability[i] >= screener.threshold else "NORMAL",
                    "" if viral is None else f"{viral[i]:.6f}",
                ]
            )

    metrics["seconds"] = round(time.time() - started, 1)
    metrics = _clean(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots.roc_plot(y, probability, screener.threshold, metrics, out_dir / "roc.png")
    plots.pr_plot(y, probability, metrics, out_dir / "pr.png")
    plots.reliability_plot(metrics["reliability"], metrics["ece"], out_dir / "calibration.png")
    plots.confusion_plot(metrics["confusion"], out_dir / "confusion.png")
    (out_dir / "report.md").write_text(markdown_report(metrics))
    return metrics


def twin_consistency(screener, records, probability: np.ndarray, twins_dir: str | Path) -> dict:
    """Scores of the evaluated files against the same files stored at another resolution (e.g. 224 copies)."""
    twins_dir = Path(twins_dir)
    pairs = [(i, r) for i, r in enumerate(records) if (twins_dir / r.path).is_file()]
    if not pairs:
        return {"n": 0}
    twin_images = load_inputs(twins_dir, [r for _, r in pairs], screener.input_size)
    twin_probability, _ = screener.probabilities(twin_images)
    mine = probability[[i for i, _ in pairs]]
    difference = np.abs(mine - twin_probability)
    return {
        "dir": str(twins_dir),
        "n": len(pairs),
        "mean_abs_diff": float(difference.mean()),
        "median_abs_diff": float(np.median(difference)),
        "p95_abs_diff": float(np.quantile(difference, 0.95)),
        "max_abs_diff": float(difference.max()),
        "label_agreement": float(np.mean((mine >= screener.threshold) == (twin_probability >= screener.threshold))),
    }


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(pair) -> str:
    return "n/a" if not pair or pair[0] is None else f"{pair[0]:.3f}–{pair[1]:.3f}"


def markdown_report(m: dict) -> str:
    c = m["confusion"]
    lines = [
        f"# Evaluation of model {m['model_version']}",
        "",
        (
            f"Data: `{m['data']}` — {m['n']} images ({m['n_pneumonia']} pneumonia, {m['n_normal']} normal, "
            f"{m['n_patients']} patients). Threshold {m['threshold']:.4f}, temperature {m['temperature']:.3f} "
            f"and bias {m.get('bias', 0.0):.3f} come from the model card (nothing refitted on this data); "
            "95 % CIs resample patients."
        ),
        "",
        "| metric | value | 95 % CI |",
        "|---|---|---|",
        f"| AUC | {_fmt(m['auc'], 4)} | {_ci(m['auc_ci'])} |",
        f"| sensitivity | {_fmt(m['sensitivity'])} | {_ci(m.get('sensitivity_ci'))} |",
        f"| specificity | {_fmt(m['specificity'])} | {_ci(m.get('specificity_ci'))} |",
        f"| accuracy | {_fmt(m['accuracy'])} | |",
        f"| PPV / NPV | {_fmt(m['ppv'])} / {_fmt(m['npv'])} | |",
        f"| ECE (10 bins) | {_fmt(m['ece'], 4)} | |",
        f"| viral vs bacterial AUC (n={m['viral_n']}) | {_fmt(m['viral_auc'])} | {_ci(m['viral_auc_ci'])} |",
        "",
        f"Confusion (rows true, columns predicted): TN {c['tn']}, FP {c['fp']}, FN {c['fn']}, TP {c['tp']}.",
        "",
        "Figures: `roc.png`, `pr.png`, `calibration.png`, `confusion.png`; per-image scores in `scores.csv`.",
    ]
    if m.get("twins", {}).get("n"):
        t = m["twins"]
        lines += [
            "",
            (
                f"Resolution consistency against `{t['dir']}` ({t['n']} twin files): mean |ΔP| "
                f"{t['mean_abs_diff']:.4f}, median {t['median_abs_diff']:.4f}, 95th percentile "
                f"{t['p95_abs_diff']:.4f}, max {t['max_abs_diff']:.4f}; same label for "
                f"{100 * t['label_agreement']:.1f} % of files."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder with model.keras and card.json")
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ images, any resolution")
    parser.add_argument("--out", required=True, help="folder for metrics.json, figures and report.md")
    parser.add_argument("--twins", help="folder with the same files at another resolution, for score agreement")
    parser.add_argument(
        "--manifest", help="keep only files of --role in this split manifest (matched by label and name)"
    )
    parser.add_argument("--role", default="val")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    args = parser.parse_args(argv)
    m = evaluate(args.model, args.data, args.out, args.twins, args.manifest, args.role, args.bootstrap)
    print(
        f"{m['n']} images: AUC {_fmt(m['auc'], 4)} [{_ci(m['auc_ci'])}] sensitivity {_fmt(m['sensitivity'])} "
        f"specificity {_fmt(m['specificity'])} ECE {_fmt(m['ece'], 4)} viral AUC {_fmt(m['viral_auc'])}"
        + (f" twins mean|dP| {m['twins']['mean_abs_diff']:.4f}" if m.get("twins", {}).get("n") else "")
    )
    print(f"wrote {args.out}/metrics.json, report.md and figures")


if __name__ == "__main__":
    main()
