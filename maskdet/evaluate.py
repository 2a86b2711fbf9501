"""Stage 05: evaluation from labels and probabilities (ROC, PR, thresholds, groups, mistakes).

The metric functions take plain arrays (label 1 = wearing_mask, probability of a mask) and are
written with numpy alone so that the tests can check them against scikit-learn:

- ROC curve and AUC (Mann-Whitney rank form: ties count one half), with a seeded percentile
  bootstrap 95% interval. The bootstrap resamples whole *clusters* when ``groups`` is given
  (:func:`evaluate_run` passes the identity: a face and its masked twin, and all photos of one
  person, are not independent), else it resamples positives and negatives separately
  (stratified, so every resample has both classes).
- PR curve and average precision (``sum_n (R_n - R_{n-1}) P_n``, scikit-learn's definition).
- Accuracy / precision / recall / specificity / F1 at a threshold (``prob >= threshold``).
- The operating threshold is chosen on **val**, never on test: :func:`choose_threshold` maximises
  Youden's J = TPR - FPR (default; balances both error kinds, insensitive to class balance) or F1.
- TPR at a fixed FPR (1%, 5%): the best TPR among thresholds whose FPR does not exceed the target.
- Per-group results (mask type, mask colour): each group's masked faces against *all* unmasked
  faces of the split (unmasked faces have no mask type), so a group's AUC and recall say how well
  that kind of mask is recognised.

:func:`evaluate_run` ties it together for a training run: best checkpoint, the split's
predictions, every number above, figures as PNG, ``eval_<split>.json``, and the same numbers
logged to TensorBoard and WandB.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FPR_TARGETS = (0.01, 0.05)
PREDS_DIRNAME = "preds"
EPOCH_PREDS_RE = re.compile(r"val_epoch_(\d+)\.csv$")


# ------------------------------------------------------------------------ basic checks


def _arrays(labels: Sequence, probs: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (not_wearing_mask) or 1 (wearing_mask)")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or inf")
    return y, p


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


# --------------------------------------------------------------------------------- ROC


def roc_curve_points(
    labels: Sequence, probs: Sequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for every distinct score, starting at (0, 0) with threshold +inf.

    ``prob >= thresholds[i]`` gives the point ``(fpr[i], tpr[i])``; same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, p = _arrays(labels, probs)
    if not _both_classes(y):
        raise ValueError("ROC needs both classes")
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thr = np.r_[np.inf, p[last]]
    return fpr, tpr, thr


def roc_auc(labels: Sequence, probs: Sequence) -> float:
    """Area under the ROC curve = P(score of a masked face > score of an unmasked one), ties 1/2."""
    y, p = _arrays(labels, probs)
    if not _both_classes(y):
        raise ValueError("AUC needs both classes")
    ranks = _average_ranks(p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _auc_pos_neg(pos: np.ndarray, neg: np.ndarray) -> float:
    neg = np.sort(neg)
    less = np.searchsorted(neg, pos, side="left")
    less_eq = np.searchsorted(neg, pos, side="right")
    return float((less.sum() + 0.5 * (less_eq - less).sum()) / (pos.size * neg.size))


def bootstrap_auc_ci(
    labels: Sequence,
    probs: Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: Sequence | None = None,
) -> dict:
    """Percentile bootstrap interval of the AUC (seeded: the same numbers on every call).

    Without ``groups``: stratified (positives and negatives resampled separately). With
    ``groups`` (e.g. identity): whole groups are resampled, keeping dependent images together;
    resamples that lack a class are redrawn (counted in ``redrawn``).
    """
    y, p = _arrays(labels, probs)
    if not _both_classes(y):
        raise ValueError("AUC needs both classes")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    redrawn = 0
    if groups is None:
        pos, neg = p[y == 1], p[y == 0]
        for b in range(n_boot):
            aucs[b] = _auc_pos_neg(rng.choice(pos, pos.size), rng.choice(neg, neg.size))
    else:
        g = np.asarray(list(groups), dtype=object)
        if g.shape[0] != y.size:
            raise ValueError("groups must have one entry per label")
        _, gid = np.unique(g.astype(str), return_inverse=True)
        members = [np.flatnonzero(gid == k) for k in range(gid.max() + 1)]
        b = 0
        while b < n_boot:
            pick = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            yb = y[pick]
            if not _both_classes(yb):
                redrawn += 1
                if redrawn > 10 * n_boot:
                    raise ValueError("too few groups of both classes for a grouped bootstrap")
                continue
            aucs[b] = _auc_pos_neg(p[pick][yb == 1], p[pick][yb == 0])
            b += 1
    lo, hi = np.quantile(aucs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "auc": roc_auc(y, p),
        "low": float(lo),
        "high": float(hi),
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "method": "grouped" if groups is not None else "stratified",
        "redrawn": redrawn,
    }


def tpr_at_fpr(labels: Sequence, probs: Sequence, target: float) -> dict:
    """Best TPR among thresholds with FPR <= ``target`` (and the threshold and FPR reached)."""
    fpr, tpr, thr = roc_curve_points(labels, probs)
    ok = np.flatnonzero(fpr <= target + 1e-12)
    i = ok[np.argmax(tpr[ok])]
    return {
        "fpr_target": target,
        "tpr": float(tpr[i]),
        "fpr": float(fpr[i]),
        "threshold": float(thr[i]),
    }


# ---------------------------------------------------------------------------------- PR


def pr_curve_points(labels: Sequence, probs: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) per distinct score, in order of increasing threshold,
    ending with the point (precision 1, recall 0) as scikit-learn's ``precision_recall_curve``."""
    y, p = _arrays(labels, probs)
    if not y.any():
        raise ValueError("PR curve needs at least one positive")
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tps = np.cumsum(y)[last]
    predicted = last + 1
    precision = tps / predicted
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], p[last][::-1]


def average_precision(labels: Sequence, probs: Sequence) -> float:
    """AP = sum over thresholds of (R_n - R_{n-1}) * P_n (no interpolation)."""
    precision, recall, _ = pr_curve_points(labels, probs)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


# ------------------------------------------------------------------------- thresholds


def confusion(labels: Sequence, probs: Sequence, threshold: float = 0.5) -> np.ndarray:
    """2x2 counts [[TN, FP], [FN, TP]] (rows: true class 0/1, columns: predicted 0/1)."""
    y, p = _arrays(labels, probs)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def threshold_metrics(labels: Sequence, probs: Sequence, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall (TPR), specificity (TNR), F1 and the counts at ``threshold``.

    A ratio whose denominator is zero is reported as 0.0 (scikit-learn's ``zero_division=0``).
    """
    (tn, fp), (fn, tp) = confusion(labels, probs, threshold).tolist()
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "specificity": _div(tn, tn + fp),
        "f1": _div(2 * precision * recall, precision + recall),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def choose_threshold(labels: Sequence, probs: Sequence, method: str = "youden") -> dict:
    """The operating threshold from (val) predictions: max Youden's J (default) or max F1.

    Among equally good thresholds the one nearest 0.5 is taken; the returned threshold is the
    midpoint between the chosen score and the next lower one, so it does not sit on a val score.
    """
    y, p = _arrays(labels, probs)
    fpr, tpr, thr = roc_curve_points(y, p)
    if method == "youden":
        score = tpr - fpr
    elif method == "f1":
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        tp, fp = tpr * n_pos, fpr * n_neg
        score = np.where(tp > 0, 2 * tp / (2 * tp + fp + (n_pos - tp)), 0.0)
    else:
        raise ValueError(f"threshold method must be 'youden' or 'f1', not {method!r}")
    score, thr_f = score[1:], thr[1:]  # the +inf point predicts nothing positive
    best = np.flatnonzero(np.isclose(score, score.max()))
    i = best[np.argmin(np.abs(thr_f[best] - 0.5))]
    lower = thr_f[i + 1] if i + 1 < thr_f.size else 0.0
    t = float((thr_f[i] + lower) / 2)
    return {"threshold": t, "method": method, "score": float(score[i])}


# ---------------------------------------------------------------------- groups, errors


def group_metrics(
    labels: Sequence, probs: Sequence, groups: Sequence[str], threshold: float
) -> dict:
    """Per group value of the positives (e.g. mask type): n, mean probability, recall at
    ``threshold``, and AUC of that group's positives against all negatives."""
    y, p = _arrays(labels, probs)
    g = np.asarray([str(v) for v in groups])
    neg = p[y == 0]
    out = {}
    for value in sorted(set(g[y == 1].tolist())):
        sel = (y == 1) & (g == value)
        pos = p[sel]
        out[value or "(none)"] = {
            "n": int(sel.sum()),
            "mean_prob": float(pos.mean()),
            "recall": float(np.mean(pos >= threshold)),
            "auc_vs_all_unmasked": _auc_pos_neg(pos, neg) if neg.size else float("nan"),
        }
    return out


def confident_mistakes(
    paths: Sequence[str], labels: Sequence, probs: Sequence, threshold: float = 0.5, k: int = 16
) -> list[dict]:
    """The ``k`` wrong predictions at ``threshold`` with the most confidence (largest |p - label|)."""
    y, p = _arrays(labels, probs)
    wrong = np.flatnonzero((p >= threshold) != (y == 1))
    order = wrong[np.argsort(-np.abs(p[wrong] - y[wrong]), kind="mergesort")][:k]
    return [{"path": str(paths[i]), "label": int(y[i]), "prob": float(p[i])} for i in order]


# ------------------------------------------------------------------------- one report


def evaluate_predictions(
    labels: Sequence,
    probs: Sequence,
    threshold: float | None = None,
    paths: Sequence[str] | None = None,
    groups: dict[str, Sequence[str]] | None = None,
    clusters: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_mistakes: int = 16,
) -> dict:
    """Every number of stage 05 as a JSON-able dict (``threshold``: chosen on val; None -> 0.5 only)."""
    y, p = _arrays(labels, probs)
    op = 0.5 if threshold is None else float(threshold)
    fpr, tpr, thr = roc_curve_points(y, p)
    prec, rec, pthr = pr_curve_points(y, p)
    out = {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "n_neg": int(y.size - y.sum()),
        "auc": bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed, groups=clusters),
        "average_precision": average_precision(y, p),
        "at_0.5": threshold_metrics(y, p, 0.5),
        "at_threshold": threshold_metrics(y, p, op),
        "tpr_at_fpr": {f"{t:g}": tpr_at_fpr(y, p, t) for t in FPR_TARGETS},
        "confusion_at_threshold": confusion(y, p, op).tolist(),
        "confusion_at_0.5": confusion(y, p, 0.5).tolist(),
        "roc": {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": [float(min(t, 1e9)) for t in thr],
        },
        "pr": {"precision": prec.tolist(), "recall": rec.tolist(), "thresholds": pthr.tolist()},
    }
    if groups:
        out["groups"] = {name: group_metrics(y, p, vals, op) for name, vals in groups.items()}
    if paths is not None:
        out["mistakes"] = confident_mistakes(paths, y, p, op, n_mistakes)
    return out


# --------------------------------------------------------------------- per-epoch files


def read_predictions(path: str | os.PathLike) -> dict[str, list]:
    """A predictions CSV (columns path, label, prob at least) as lists by column."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"label", "prob"} <= set(rows[0]):
        raise ValueError(f"{path}: need columns label and prob, found {list(rows[0])}")
    return {
        "path": [r.get("path", "") for r in rows],
        "label": [int(float(r["label"])) for r in rows],
        "prob": [float(r["prob"]) for r in rows],
    }


def write_predictions(
    path: str | os.PathLike, paths: Sequence[str], labels: Sequence, probs: Sequence
) -> Path:
    """Write path,label,prob rows (the format :func:`read_predictions` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label", "prob"])
        for a, b, c in zip(paths, labels, probs):
            w.writerow([a, int(b), f"{float(c):.8g}"])
    return path


def epoch_prediction_files(run_dir: str | os.PathLike) -> dict[int, Path]:
    """``RUN_DIR/preds/val_epoch_XXX.csv`` by epoch number."""
    folder = Path(run_dir) / PREDS_DIRNAME
    out = {}
    for f in sorted(folder.glob("val_epoch_*.csv")) if folder.is_dir() else []:
        m = EPOCH_PREDS_RE.search(f.name)
        if m:
            out[int(m.group(1))] = f
    return out


def _require_epoch_files(run_dir: str | os.PathLike) -> dict[int, Path]:
    """The per-epoch prediction files, or a clear error naming the stage to run."""
    files = epoch_prediction_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"no per-epoch predictions in {Path(run_dir) / PREDS_DIRNAME}: train first"
        )
    return files


def epoch_aucs(run_dir: str | os.PathLike) -> dict[int, float]:
    """Val AUC of every epoch, recomputed from the saved per-epoch predictions."""
    out = {}
    for epoch, f in epoch_prediction_files(run_dir).items():
        d = read_predictions(f)
        out[epoch] = (
            roc_auc(d["label"], d["prob"])
            if _both_classes(np.asarray(d["label"]))
            else float("nan")
        )
    return out


# ---------------------------------------------------------------------------- figures


def _new_ax(ax=None, size=(4.5, 4.2)):
    import matplotlib.pyplot as plt

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
    from . import LABELS

    fig, ax = _new_ax(ax, (4, 3.6))
    cm = np.asarray(result[key])
    ax.imshow(cm, cmap="Blues")
    names = [n.replace("_", " ") for n, _ in sorted(LABELS.items(), key=lambda kv: kv[1])]
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


def plot_epoch_rocs(run_dir: str | os.PathLike, ax=None, max_curves: int = 60):
    """Val ROC curves of every epoch overlaid (colour = epoch), from RUN_DIR/preds."""
    import matplotlib.pyplot as plt

    files = _require_epoch_files(run_dir)
    fig, ax = _new_ax(ax, (5.2, 4.5))
    epochs = sorted(files)
    if len(epochs) > max_curves:  # keep first, last and evenly spaced epochs
        idx = np.unique(np.linspace(0, len(epochs) - 1, max_curves).round().astype(int))
        epochs = [epochs[i] for i in idx]
    cmap = plt.get_cmap("viridis")
    lo, hi = min(epochs), max(epochs)
    for e in epochs:
        d = read_predictions(files[e])
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
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="epoch")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="val ROC, every epoch")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_auc_vs_epoch(run_dir: str | os.PathLike, ax=None):
    _require_epoch_files(run_dir)
    aucs = epoch_aucs(run_dir)
    fig, ax = _new_ax(ax, (5, 3.5))
    ep = sorted(aucs)
    ax.plot(ep, [aucs[e] for e in ep], "o-", ms=3)
    best = max(ep, key=lambda e: aucs[e])
    ax.plot(best, aucs[best], "r*", ms=12, label=f"best: epoch {best}, AUC {aucs[best]:.4f}")
    ax.set(xlabel="epoch", ylabel="val AUC", title="val AUC per epoch")
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
    """The images of :func:`confident_mistakes` with their true label and probability."""
    import matplotlib.pyplot as plt

    from .imageio import BadImage, read_rgb

    n = max(len(mistakes), 1)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
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
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ a whole run


def _resolve_data_dir(data_dir: str | os.PathLike | None, meta: dict) -> Path:
    from .pipeline import ROOT

    cand = Path(data_dir or meta.get("hparams", {}).get("data", ""))
    for p in (cand, ROOT / cand):
        if (p / "manifest.csv").exists():
            return p
    raise FileNotFoundError(
        f"no manifest.csv in {cand}: pass --data DATA_DIR (the data the run was trained on)"
    )


def predict_split(
    model,
    data_dir: str | os.PathLike,
    split: str,
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int | None = None,
) -> dict:
    """Probabilities for a split with the project's deterministic val/test loader (cached path)."""
    import torch

    from .loader import make_loaders
    from .train import predict

    loader = make_loaders(
        data_dir,
        batch_size=batch_size,
        mode="cached",
        splits=(split,),
        limit=limit,
        val_limit=limit,
        device=device,
        workers=workers,
    )[split]
    pred = predict(model, loader, torch.device(device))
    pred["skipped"] = dict(loader.skips.paths)
    return pred


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    checkpoint: str = "best.pt",
    limit: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    wandb: str = "auto",
    tensorboard: bool = True,
    device: str = "cpu",
    workers: int | None = None,
    threshold_method: str = "checkpoint",
) -> dict:
    """Evaluate a training run's best checkpoint on ``split``: all numbers, JSON and PNGs.

    Writes ``RUN_DIR/eval_<split>.json``, ``RUN_DIR/preds/<split>_eval.csv`` and figures in
    ``RUN_DIR/eval_<split>/``; logs the scalars and figures to TensorBoard (``RUN_DIR/tb``, tags
    ``<split>/...``) and to a WandB run named ``<run>-eval-<split>``. The operating threshold:
    ``threshold_method="checkpoint"`` (default) takes the one chosen on val at training time
    (stored in the checkpoint; Youden's J on val here if the checkpoint has none); ``"youden"`` or
    ``"f1"`` choose it again on val with :func:`choose_threshold`.
    """
    import matplotlib.pyplot as plt

    from .manifest import read_manifest
    from .train import load_model

    run_dir = Path(run_dir)
    ckpt_path = run_dir / checkpoint
    if not ckpt_path.exists():
        raise FileNotFoundError(
            f"{ckpt_path} not found: train first (notebook 04 or `python -m maskdet train`)"
        )
    model, meta = load_model(ckpt_path, device)
    data_dir = _resolve_data_dir(data_dir, meta)
    pred = predict_split(model, data_dir, split, limit=limit, device=device, workers=workers)
    if threshold_method == "checkpoint" and meta.get("threshold") is not None:
        thr = {
            "threshold": float(meta["threshold"]),
            "method": "checkpoint (chosen on val at training time, Youden's J)",
        }
    else:
        val = predict_split(model, data_dir, "val", limit=limit, device=device, workers=workers)
        method = "youden" if threshold_method == "checkpoint" else threshold_method
        thr = choose_threshold(val["labels"], val["probs"], method)
        thr["method"] = f"val, {thr['method']}"
    rows = {r["path"]: r for r in read_manifest(data_dir)}
    paths = list(pred["paths"])
    info = [rows.get(p, {}) for p in paths]
    groups = {k: [r.get(k, "") for r in info] for k in ("mask_type", "mask_color")}
    clusters = [r.get("identity") or p for r, p in zip(info, paths)]
    result = evaluate_predictions(
        pred["labels"],
        pred["probs"],
        thr["threshold"],
        paths=paths,
        groups=groups,
        clusters=clusters,
        n_boot=n_boot,
        seed=seed,
    )
    result.update(
        {
            "split": split,
            "run_dir": str(run_dir),
            "checkpoint": str(ckpt_path),
            "data_dir": str(data_dir),
            "best_epoch": meta.get("epoch"),
            "best_val_auc": meta.get("val_auc"),
            "arch": meta.get("arch"),
            "threshold_choice": thr,
            "skipped_images": pred["skipped"],
            "bootstrap_note": "percentile bootstrap over identities (a face and its masked twin move together)",
        }
    )
    write_predictions(
        run_dir / PREDS_DIRNAME / f"{split}_eval.csv", paths, pred["labels"], pred["probs"]
    )

    fig_dir = run_dir / f"eval_{split}"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = {
        "roc": plot_roc(result, title=f"{split} ROC (best epoch {meta.get('epoch')})"),
        "pr": plot_pr(result, title=f"{split} precision-recall"),
        "confusion": plot_confusion(result),
        "groups_mask_type": plot_groups(result, "mask_type"),
        "groups_mask_color": plot_groups(result, "mask_color"),
        "mistakes": mistakes_gallery(
            result["mistakes"], data_dir, title=f"{split}: most confident mistakes"
        ),
    }
    if epoch_prediction_files(run_dir):
        figs["epoch_rocs"] = plot_epoch_rocs(run_dir)
        figs["auc_vs_epoch"] = plot_auc_vs_epoch(run_dir)
        result["val_auc_per_epoch"] = {str(k): v for k, v in epoch_aucs(run_dir).items()}
    result["figures"] = {}
    for name, fig in figs.items():
        path = fig_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        result["figures"][name] = str(path)
    (run_dir / f"eval_{split}.json").write_text(json.dumps(result, indent=1, default=float))
    _log_eval(run_dir, split, result, figs, meta, wandb, tensorboard)
    for fig in figs.values():
        plt.close(fig)
    return result


def headline(result: dict) -> dict[str, float]:
    """The scalar results of :func:`evaluate_predictions` under flat names (for sinks and tables)."""
    out = {
        "auc": result["auc"]["auc"],
        "auc_ci_low": result["auc"]["low"],
        "auc_ci_high": result["auc"]["high"],
        "average_precision": result["average_precision"],
    }
    for key, tag in (("at_0.5", "at_0.5"), ("at_threshold", "at_val_threshold")):
        for m in ("accuracy", "precision", "recall", "specificity", "f1"):
            out[f"{m}_{tag}"] = result[key][m]
    out["val_threshold"] = result["at_threshold"]["threshold"]
    for t, v in result["tpr_at_fpr"].items():
        out[f"tpr_at_fpr_{t}"] = v["tpr"]
    return out


def _log_eval(
    run_dir: Path,
    split: str,
    result: dict,
    figs: dict,
    meta: dict,
    wandb_mode: str,
    tensorboard: bool,
) -> None:
    """The evaluation's scalars and figures to TensorBoard and WandB (same sinks as training)."""
    from .sinks import TensorBoardSink, WandbSink

    step = int(meta.get("epoch") or 0)
    scalars = {f"{split}/{k}": v for k, v in headline(result).items()}
    if tensorboard:
        tb = TensorBoardSink(run_dir)
        for k, v in scalars.items():
            tb.writer.add_scalar(k, v, step)
        for name, fig in figs.items():
            tb.writer.add_figure(f"{split}/{name}", fig, step, close=False)
        tb.writer.close()
    if wandb_mode != "disabled":
        wb = WandbSink(
            run_dir,
            {"split": split, "checkpoint": result["checkpoint"], **meta.get("hparams", {})},
            wandb_mode,
            name=f"{run_dir.name}-eval-{split}",
        )
        if wb.run is not None:
            import wandb

            wb.run.log({**scalars, **{f"{split}/{n}": wandb.Image(f) for n, f in figs.items()}})
            wb.run.summary.update(scalars)
            wb.run.finish()


def add_evaluate_args(p) -> None:
    """Options of ``python -m maskdet evaluate``."""
    p.add_argument("--run", required=True, help="RUN_DIR of a training run (holds best.pt)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--data", default=None, help="DATA_DIR (default: the one the run was trained on)"
    )
    p.add_argument("--checkpoint", default="best.pt", help="file name inside RUN_DIR")
    p.add_argument(
        "--limit", type=int, default=None, help="at most N images of the split (whole twin pairs)"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC interval"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"], default="auto")
    p.add_argument("--device", default="cpu")


def evaluate_cli(a) -> dict:
    """``python -m maskdet evaluate --run RUN_DIR [--split test]``: prints the headline numbers."""
    r = evaluate_run(
        a.run, a.split, a.data, a.checkpoint, a.limit, a.bootstrap, a.seed, a.wandb, device=a.device
    )
    print(
        json.dumps(
            {
                "split": r["split"],
                "n": r["n"],
                **headline(r),
                "figures": r["figures"],
                "json": str(Path(a.run) / f"eval_{a.split}.json"),
            },
            indent=2,
        )
    )
    return r
