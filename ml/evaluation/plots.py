"""Evaluation figures (ROC, precision-recall, reliability, confusion matrix) as PNG files.

Matplotlib runs headless (Agg) so evaluation works on a worker or CI box without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc_plot(y: np.ndarray, p: np.ndarray, threshold: float, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"AUC {metrics['auc']:.3f}" if metrics["auc"] is not None else "ROC")
        if metrics["specificity"] is not None and metrics["sensitivity"] is not None:
            ax.plot(1 - metrics["specificity"], metrics["sensitivity"], "o", label=f"threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    ax.legend(loc="lower right")
    _save(fig, path)


def pr_plot(y: np.ndarray, p: np.ndarray, metrics: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if y.sum() > 0:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision)
        if metrics["sensitivity"] is not None and metrics["ppv"] is not None:
            ax.plot(metrics["sensitivity"], metrics["ppv"], "o", label="operating point")
            ax.legend(loc="lower left")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", ylim=(0, 1.02))
    _save(fig, path)


def reliability_plot(table: list[dict], ece: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    used = [row for row in table if row["n"]]
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.bar(
        [(r["low"] + r["high"]) / 2 for r in used],
        [r["observed_rate"] for r in used],
        width=0.09,
        alpha=0.6,
        label="observed rate",
    )
    ax.plot([r["mean_probability"] for r in used], [r["observed_rate"] for r in used], "o-", label="bins")
    for r in used:
        ax.annotate(str(r["n"]), ((r["low"] + r["high"]) / 2, 0.02), ha="center", fontsize=7)
    ax.set(
        xlabel="predicted P(pneumonia)",
        ylabel="observed fraction with pneumonia",
        title=f"Reliability (ECE {ece:.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="center left")
    _save(fig, path)


def confusion_plot(counts: dict, path: Path) -> None:
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > matrix.max() / 2 else "black",
            fontsize=14,
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["NORMAL", "PNEUMONIA"],
        yticklabels=["NORMAL", "PNEUMONIA"],
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix",
    )
    _save(fig, path)
