"""The report's figures (matplotlib), one function each; the modules that compute the numbers
hand them over, and nothing here computes a result again.

Stage 05's figures: the test split's ROC, PR, confusion, groups and mistakes, every epoch's ROC,
synthetic against real faces (:func:`real_panels`) and the ablation summary. The figures of the
earlier stages are in each stage's own figures module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..core.constants import CLASS_NAMES
from ..core.imageio import BadImage, read_rgb
from ..core.metrics import roc_auc, roc_curve_points
from ..training.figures import epoch_axis

# ----------------------------------------------------------------- stage 05: evaluation


def _new_ax(ax=None, size=(4.5, 4.2)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
    return ax.figure, ax


def plot_roc(result: dict, ax=None, title: str = "ROC"):
    """ROC curve of an :func:`evaluate_predictions` result, with the AUC interval and the
    operating points at 0.5 and at the val threshold."""
    fig, ax = _new_ax(ax)
    auc = result["auc"]
    ax.plot(
        result["roc"]["fpr"],
        result["roc"]["tpr"],
        lw=2,
        label=f"AUC {auc['auc']:.4f} [{auc['low']:.4f}, {auc['high']:.4f}]",
    )
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    for key, marker in (("at_0.5", "o"), ("at_threshold", "s")):
        m = result[key]
        ax.plot(
            1 - m["specificity"],
            m["recall"],
            marker,
            ms=7,
            label=f"threshold {m['threshold']:.3g}: TPR {m['recall']:.3f}, FPR {1 - m['specificity']:.3f}",
        )
    ax.set(
        xlabel="false positive rate (unmasked called masked)",
        ylabel="true positive rate (masks found)",
        title=title,
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_pr(result: dict, ax=None, title: str = "Precision-recall"):
    fig, ax = _new_ax(ax)
    ax.step(
        result["pr"]["recall"],
        result["pr"]["precision"],
        where="post",
        lw=2,
        label=f"AP {result['average_precision']:.4f}",
    )
    base = result["n_pos"] / max(result["n"], 1)
    ax.axhline(base, color="k", ls=":", lw=1, label=f"chance ({base:.2f})")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(-0.01, 1.01), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_confusion(
    result: dict, key: str = "confusion_at_threshold", ax=None, title: str | None = None
):
    fig, ax = _new_ax(ax, (4, 3.6))
    cm = np.asarray(result[key])
    ax.imshow(cm, cmap="Blues")
    names = [n.replace("_", " ") for n in CLASS_NAMES]
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
                fontsize=12,
            )
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    thr = result["at_threshold" if key == "confusion_at_threshold" else "at_0.5"]["threshold"]
    ax.set(xlabel="predicted", ylabel="true", title=title or f"confusion at threshold {thr:.3g}")
    return fig


def plot_epoch_rocs(epoch_preds: dict[int, dict], ax=None, max_curves: int = 60):
    """Val ROC curves of every epoch overlaid (colour = epoch), from the saved per-epoch
    predictions (:func:`maskdet.evaluation.evaluate.epoch_predictions`)."""
    fig, ax = _new_ax(ax, (5.2, 4.5))
    epochs = sorted(epoch_preds)
    if len(epochs) > max_curves:  # keep first, last and evenly spaced epochs
        idx = np.unique(np.linspace(0, len(epochs) - 1, max_curves).round().astype(int))
        epochs = [epochs[i] for i in idx]
    cmap = plt.get_cmap("viridis")
    lo, hi = min(epochs), max(epochs)
    for e in epochs:
        d = epoch_preds[e]
        fpr, tpr, _ = roc_curve_points(d["label"], d["prob"])
        c = cmap((e - lo) / max(hi - lo, 1))
        ax.plot(
            fpr,
            tpr,
            color=c,
            lw=1.2,
            alpha=0.85,
            label=f"epoch {e}: AUC {roc_auc(d['label'], d['prob']):.4f}" if e in (lo, hi) else None,
        )
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    norm = plt.Normalize(lo, hi) if hi > lo else plt.Normalize(lo - 0.5, hi + 0.5)
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=norm), ax=ax, label="epoch")
    bar.locator = MaxNLocator(integer=True, min_n_ticks=1)
    bar.update_ticks()
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="val ROC, every epoch")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_auc_vs_epoch(aucs: dict[int, float], ax=None):
    """Val AUC against the epoch (:func:`maskdet.evaluation.evaluate.epoch_aucs`), the best one starred."""
    fig, ax = _new_ax(ax, (5, 3.5))
    ep = sorted(aucs)
    ax.plot(ep, [aucs[e] for e in ep], "o-", ms=3)
    best = max(ep, key=lambda e: aucs[e])
    ax.plot(best, aucs[best], "r*", ms=12, label=f"best: epoch {best}, AUC {aucs[best]:.4f}")
    ax.set(ylabel="val AUC", title="val AUC per epoch")
    epoch_axis(ax, ep)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_groups(result: dict, name: str, ax=None):
    """Bar chart of recall per group value (``name``: mask_type or mask_color)."""
    groups = result.get("groups", {}).get(name, {})
    fig, ax = _new_ax(ax, (max(4, 0.5 * len(groups) + 2), 3.4))
    keys = sorted(groups, key=lambda k: groups[k]["recall"])
    ax.bar(range(len(keys)), [groups[k]["recall"] for k in keys], color="tab:blue")
    for i, k in enumerate(keys):
        ax.text(i, groups[k]["recall"], f"n={groups[k]['n']}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
    ax.set(
        ylim=(0, 1.1),
        ylabel="recall at val threshold",
        title=f"masked faces found, per {name.replace('_', ' ')}",
    )
    return fig


def mistakes_gallery(
    mistakes: list[dict], data_dir: str | os.PathLike, cols: int = 8, title: str = ""
):
    """The images of :func:`maskdet.evaluation.evaluate.confident_mistakes` with their true label and
    probability."""
    n = max(len(mistakes), 1)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 2.0 * rows + 0.3), squeeze=False, layout="constrained"
    )  # constrained: each row's titles get their own room, below the images above them
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m in zip(axes.ravel(), mistakes):
        try:
            ax.imshow(read_rgb(Path(data_dir) / m["path"]))
        except BadImage as err:
            ax.text(0.5, 0.5, str(err), ha="center", va="center", fontsize=6, wrap=True)
        truth = "mask" if m["label"] == 1 else "no mask"
        ax.set_title(f"true: {truth}\np(mask)={m['prob']:.3f}", fontsize=7, color="tab:red")
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title or "most confident mistakes", fontsize=9)
    return fig


def worn_gallery(worn: dict, real_dir: str | os.PathLike | None = None, cols: int = 6):
    """The example crops of :func:`maskdet.evaluation.worn.worn_wrong_report` (masks worn wrong, the
    highest p(mask) of each category) with their category and probability: red when the binary
    model calls them wearing_mask at the val threshold (a door would let them in). ``real_dir``:
    the real set's folder (default: the one the report was made from)."""
    thr = worn["threshold"]
    examples = worn["examples"]
    fig = mistakes_gallery(
        [{**e, "label": 1} for e in examples],
        real_dir or worn["root"],
        cols=cols,
        title=f"masks worn wrong, highest p(mask) per category (red: called mask on at {thr:.3g})",
    )
    for ax, e in zip(fig.axes, examples):
        colour = "tab:red" if e["prob"] >= thr else "tab:green"
        ax.set_title(f"{e['category']}\np(mask)={e['prob']:.3f}", fontsize=7, color=colour)
    return fig


def real_panels(test: dict, real: dict):
    """The synthetic test split's ROC beside the real faces' ROC (one axes), and the real AUC per
    framing (tight kiosk crops to loose phone crops) against the synthetic test AUC."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.3))
    for res, name in ((test, "synthetic test"), (real, "real faces")):
        a = res["auc"]
        ax[0].plot(res["roc"]["fpr"], res["roc"]["tpr"], lw=2, label=f"{name}: AUC {a['auc']:.4f}")
        m = res["at_threshold"]
        ax[0].plot(1 - m["specificity"], m["recall"], "s", ms=6, color=ax[0].lines[-1].get_color())
    ax[0].plot([0, 1], [0, 1], "k:", lw=1)
    ax[0].set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC (square: val threshold)",
    )
    ax[0].legend(loc="lower right", fontsize=8)
    names = list(real["framings"])
    aucs = [real["framings"][k]["auc"] for k in names]
    ax[1].bar(names, aucs, color="tab:orange")
    ax[1].axhline(test["auc"]["auc"], ls="--", color="tab:blue", label="synthetic test AUC")
    for i, (k, v) in enumerate(zip(names, aucs)):
        ax[1].text(
            i,
            v,
            f"{v:.3f}\n{real['framings'][k]['factor']}x box",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax[1].set(
        ylim=(min(aucs + [0.9]) - 0.02, 1.01), ylabel="real AUC", title="real faces per framing"
    )
    ax[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def epoch_panels(epoch_preds: dict[int, dict], aucs: dict[int, float]):
    """Every epoch's val ROC beside the val AUC per epoch."""
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_epoch_rocs(epoch_preds, ax=ax[0])
    plot_auc_vs_epoch(aucs, ax=ax[1])
    fig.tight_layout()
    return fig


def evaluation_panels(result: dict, split: str = "test"):
    """ROC, precision-recall and confusion matrix of an evaluated split, side by side."""
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.4))
    plot_roc(result, ax=ax[0], title=f"{split} ROC")
    plot_pr(result, ax=ax[1], title=f"{split} precision-recall")
    plot_confusion(result, ax=ax[2])
    fig.tight_layout()
    return fig


def group_panels(result: dict):
    """Recall per mask type beside recall per mask colour."""
    fig, ax = plt.subplots(1, 2, figsize=(13, 3.6))
    plot_groups(result, "mask_type", ax=ax[0])
    plot_groups(result, "mask_color", ax=ax[1])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ stage 05: ablations


def summary_figure(table: dict):
    """Real AUC (when the runs were scored on real crops) beside synthetic test AUC per variant:
    mean over seeds with the standard deviation as error bar, every seed as a dot; the
    baseline's mean as a dashed line. A reference table says so in the title (a figure)."""
    runs = [r for r in table["runs"] if r.get("status") == "ok"]
    names = list(dict.fromkeys(f"{r['experiment']}: {r['variant']}" for r in runs))
    metrics = [("test_auc", "synthetic test AUC")]
    if any(r.get("real_auc") not in (None, "") for r in runs):
        metrics.insert(0, ("real_auc", "real AUC"))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.0 + 3.0 * len(metrics), 0.45 * len(names) + 1.4), sharey=True
    )
    for ax, (key, label) in zip(np.atleast_1d(axes), metrics):
        base = None
        for y, name in enumerate(names):
            v = np.array(
                [
                    float(r[key])
                    for r in runs
                    if f"{r['experiment']}: {r['variant']}" == name and r.get(key) not in (None, "")
                ]
            )
            if not v.size:
                continue
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            ax.errorbar(v.mean(), y, xerr=sd, fmt="s", color="C0", capsize=3)
            ax.plot(v, [y] * v.size, ".", color="C1", alpha=0.7)
            if name.startswith("baseline"):
                base = v.mean()
        if base is not None:
            ax.axvline(base, ls="--", color="grey", lw=1)
        ax.set_xlabel(label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    first = np.atleast_1d(axes)[0]
    first.set_yticks(range(len(names)), names)
    first.invert_yaxis()
    ref = table.get("reference")
    title = (
        f"reference ablation, not this run (measured {ref['date']})"
        if ref
        else f"ablations, preset {table.get('preset', '?')}"
    )
    fig.suptitle(f"{title}\nsquare: mean over seeds, bar: std, dots: seeds", fontsize=10)
    fig.tight_layout()
    return fig
