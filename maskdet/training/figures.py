"""Stage 04's figures (matplotlib): a ROC with its AUC (also for TensorBoard and WandB) and the
learning curves.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..core.metrics import roc_auc, roc_curve_points

# ------------------------------------------------------------------- stage 04: training


def roc_figure(labels: np.ndarray, probs: np.ndarray, title: str = "val ROC"):
    """A small ROC figure with the AUC in the legend (TensorBoard, WandB, notebook 04)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve_points(labels, probs)
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc(labels, probs):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.7, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def training_curves(metrics: list[dict]):
    """Loss, accuracy / AUC, learning rate, and throughput with the data wait, per epoch, from
    the per-epoch metrics dicts (:func:`maskdet.training.sinks.read_metrics`)."""
    ep = [m["epoch"] for m in metrics]

    def col(key: str) -> list[float]:
        return [m[key] for m in metrics]

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.4))
    ax[0].plot(ep, col("train/loss"), "o-", label="train")
    ax[0].plot(ep, col("val/loss"), "o-", label="val")
    ax[0].set_title("BCE loss")
    ax[1].plot(ep, col("train/acc"), "o-", label="train")
    ax[1].plot(ep, col("val/acc"), "o-", label="val")
    ax[1].plot(ep, col("val/auc"), "s--", label="val AUC")
    ax[1].set_title("accuracy / AUC")
    ax[1].set_ylim(0.4, 1.01)
    ax[2].plot(ep, col("train/lr"), "o-")
    ax[2].set_title("learning rate (end of epoch)")
    ax[3].plot(ep, col("train/images_per_s"), "o-", label="images/s")
    wait = ax[3].twinx()
    wait.plot(ep, [100 * v for v in col("train/data_wait_share")], "r.--", label="data wait %")
    ax[3].set_title("throughput and data wait (red, %)")
    for a in ax[:2]:
        a.legend()
    for a in ax:
        epoch_axis(a, ep)
    fig.tight_layout()
    return fig


def epoch_axis(ax, epochs: list[int]) -> None:
    """``ax``'s x axis: ``epoch``, ticks at whole epochs, half an epoch of margin."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
