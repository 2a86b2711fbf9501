"""The report's figures (matplotlib), one function each; the modules that compute the numbers
hand them over, and nothing here computes a result again.

Stage 01 :func:`framing_figure`; 02 :func:`sample_grid`; 03 :func:`augmented_grid`; 04
:func:`roc_figure` (also for TensorBoard and WandB) and :func:`training_curves`; 05 the test
split's ROC, PR, confusion, groups and mistakes, every epoch's ROC, synthetic against real
faces (:func:`real_panels`) and the ablation summary.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .augment import (
    BatchAugment,
    center_crop_batch,
    denormalize,
    to_tensor_uint8,
    train_transform,
)
from .augment_presets import AugmentConfig
from .cache import read_face
from .constants import CLASS_NAMES, FACE_SIZE, IMAGE_SIZE
from .data import CROP_FRACTION
from .imageio import BadImage, decode_rgb, read_rgb
from .manifest import Item, read_manifest, select_rows, usable
from .metrics import roc_auc, roc_curve_points

# -------------------------------------------------------------------- stage 01: framing


def framing_figure(data_dir: str | os.PathLike, n: int = 6, loader_crop: int = IMAGE_SIZE):
    """Original aligned images with the stored crop drawn, and the stored crops with the
    loader's centre crop drawn: shows that the 112x112 input holds the whole face."""
    data_dir = Path(data_dir)
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["status"] == "ok" and r["label"] == "not_wearing_mask"
    ][:n]
    raw = (
        next((p for p in (data_dir / "raw").glob("*_extracted")), None)
        if (data_dir / "raw").exists()
        else None
    )
    fig, axes = plt.subplots(2, len(rows), figsize=(2 * len(rows), 4.3), squeeze=False)
    for i, r in enumerate(rows):
        crop = np.asarray(Image.open(data_dir / r["path"]))
        src = None
        if raw is not None:
            cand = raw / r["source"]
            if cand.exists():
                src = decode_rgb(cand.read_bytes())
        ax = axes[0, i]
        if src is not None:
            h, w = src.shape[:2]
            side = round(min(h, w) * CROP_FRACTION)
            ax.imshow(src)
            ax.add_patch(
                Rectangle(
                    ((w - side) / 2, (h - side) / 2), side, side, fill=False, ec="lime", lw=1.5
                )
            )
        ax.set_title(r["identity"][:16], fontsize=8)
        ax.axis("off")
        ax = axes[1, i]
        ax.imshow(crop)
        m = (FACE_SIZE - loader_crop) / 2
        ax.add_patch(Rectangle((m, m), loader_crop, loader_crop, fill=False, ec="orange", lw=1.5))
        ax.axis("off")
    axes[0, 0].text(-10, 125, "aligned\nsource", ha="right", va="center", fontsize=9)
    axes[1, 0].text(-10, 64, f"stored\n{FACE_SIZE}px", ha="right", va="center", fontsize=9)
    fig.suptitle(
        f"green: stored crop ({CROP_FRACTION:.0%} of the shorter side); "
        f"orange: the loader's {loader_crop}x{loader_crop} centre crop",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------- stage 02: masked samples


def sample_grid(
    data_dir: str | os.PathLike,
    per_row: int = 8,
    by: str = "mask_type",
    label: str = "wearing_mask",
):
    """One row of samples per value of ``by``: masked faces by mask_type / mask_color, or with
    ``label="not_wearing_mask", by="occluder"`` the hard negatives by kind."""
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["label"] == label and r["status"] == "ok" and (label == "wearing_mask" or r[by])
    ]
    if not rows:
        what = "masked faces" if label == "wearing_mask" else f"{label} images with a {by}"
        raise RuntimeError(f"{data_dir} has no {what}: run synthesize first")
    groups: dict[str, list[dict[str, str]]] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        groups.setdefault(r[by] or "?", []).append(r)
    names = sorted(groups)
    size = (per_row * 1.3, len(names) * 1.45 + 0.3)  # constrained: the title above the labels
    fig, axes = plt.subplots(len(names), per_row, figsize=size, squeeze=False, layout="constrained")
    for i, name in enumerate(names):
        picks = groups[name][:: max(1, len(groups[name]) // per_row)][:per_row]
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(picks):
                ax.imshow(read_rgb(Path(data_dir) / picks[j]["path"]))
        axes[i][0].set_title(f"{name} ({len(groups[name])})", fontsize=8, loc="left")
    fig.suptitle(f"{'masked' if label == 'wearing_mask' else label} samples by {by}", fontsize=10)
    return fig


# ------------------------------------------------------ stage 03: what the network sees


def augmented_grid(
    data_dir: str | os.PathLike,
    n_per_class: int = 8,
    aug: str | AugmentConfig = "default",
    mode: str = "cached",
    split: str = "train",
    seed: int = 0,
    repeats: int = 1,
):
    """A matplotlib figure: originals and augmented training views of both classes.

    Rows: for each class, the original (centre crop) and ``repeats`` augmented views of the same
    ``n_per_class`` faces (masked row and unmasked row are twins where both exist).
    """
    rows = read_manifest(data_dir)
    items = select_rows(rows, split)
    by_pair: dict[str, dict[int, Item]] = {}
    pair_of = {r["path"]: r["pair_id"] for r in usable(rows, split)}
    for it in items:
        by_pair.setdefault(pair_of.get(it.path, it.path), {})[it.label] = it
    pairs = [p for p in sorted(by_pair) if len(by_pair[p]) == 2] or sorted(by_pair)
    rng = np.random.default_rng(seed)
    chosen = [
        pairs[i]
        for i in sorted(rng.choice(len(pairs), min(n_per_class, len(pairs)), replace=False))
    ]
    data_dir = Path(data_dir)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tf = train_transform(aug)
    batch_aug = BatchAugment(aug)
    grid_rows, row_names = [], []
    for label in (1, 0):
        pics = [by_pair[p].get(label) for p in chosen]
        raws = [
            to_tensor_uint8(read_face(data_dir / it.path)[0])
            if it
            else torch.zeros(3, FACE_SIZE, FACE_SIZE, dtype=torch.uint8)
            for it in pics
        ]
        u8 = torch.stack([torch.as_tensor(r) for r in raws])
        grid_rows.append(denormalize(center_crop_batch(u8)))
        row_names.append(f"{CLASS_NAMES[label]}\noriginal")
        for _ in range(repeats):
            if mode == "cached":
                aug_x = batch_aug(u8, g)
            else:
                aug_x = torch.stack([tf(r) for r in raws])
            grid_rows.append(denormalize(aug_x))
            row_names.append(f"{CLASS_NAMES[label]}\naugmented ({mode})")
    nr, nc = len(grid_rows), len(chosen)
    fig, axes = plt.subplots(nr, nc, figsize=(1.3 * nc + 1.2, 1.35 * nr), squeeze=False)
    for r in range(nr):
        for col in range(nc):
            ax = axes[r][col]
            ax.imshow(grid_rows[r][col].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(row_names[r], fontsize=7)
    fig.suptitle(f"Train augmentations ({mode} path), {IMAGE_SIZE}x{IMAGE_SIZE} inputs")
    fig.tight_layout()
    return fig


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
    the per-epoch metrics dicts (:func:`maskdet.sinks.read_metrics`)."""
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
    predictions (:func:`maskdet.evaluate.epoch_predictions`)."""
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
    """Val AUC against the epoch (:func:`maskdet.evaluate.epoch_aucs`), the best one starred."""
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
    """The images of :func:`maskdet.evaluate.confident_mistakes` with their true label and
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
    """The example crops of :func:`maskdet.worn.worn_wrong_report` (masks worn wrong, the
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
    fig.tight_layout()
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
