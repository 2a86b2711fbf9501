"""Metrics from labels and probabilities, the only owner of each rule (label 1 = wearing_mask,
``prob`` = probability of a mask, positive when ``prob >= threshold``).

Written with numpy alone, so that the tests can check them against scikit-learn:

- ROC curve and AUC (Mann-Whitney rank form: ties count one half), with a seeded percentile
  bootstrap 95% interval. The bootstrap resamples whole *clusters* when ``groups`` is given
  (a face and its masked twin, and all photos of one person, are not independent), else it
  resamples positives and negatives separately (stratified, so every resample has both classes).
- PR curve and average precision (``sum_n (R_n - R_{n-1}) P_n``, scikit-learn's definition).
- Accuracy / precision / recall / specificity / F1 at a threshold.
- The operating threshold, chosen on **val**, never on test: :func:`choose_threshold` maximises
  Youden's J = TPR - FPR (default; balances both error kinds, insensitive to class balance) or F1.
- TPR at a fixed FPR (1%, 5%): the best TPR among thresholds whose FPR does not exceed the target.
- Per-group results (mask type, mask colour): each group's masked faces against *all* unmasked
  faces of the split (unmasked faces have no mask type), so a group's AUC and recall say how well
  that kind of mask is recognised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ------------------------------------------------------------------------ basic checks


def as_arrays(labels: Sequence, probs: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1 int) and probabilities (float) as checked flat arrays, or a clear error."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (not_wearing_mask) or 1 (wearing_mask)")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or inf")
    return y, p


def both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


# --------------------------------------------------------------------------------- ROC


def roc_curve_points(
    labels: Sequence, probs: Sequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for every distinct score, starting at (0, 0) with threshold +inf.

    ``prob >= thresholds[i]`` gives the point ``(fpr[i], tpr[i])``; same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, p = as_arrays(labels, probs)
    if not both_classes(y):
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
    y, p = as_arrays(labels, probs)
    if not both_classes(y):
        raise ValueError("AUC needs both classes")
    ranks = _average_ranks(p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_or_nan(labels: Sequence, probs: Sequence) -> float:
    """:func:`roc_auc`, or NaN when the labels hold one class (e.g. a tiny val split)."""
    y, p = as_arrays(labels, probs)
    return roc_auc(y, p) if both_classes(y) else float("nan")


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
    y, p = as_arrays(labels, probs)
    if not both_classes(y):
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
            if not both_classes(yb):
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
    y, p = as_arrays(labels, probs)
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
    y, p = as_arrays(labels, probs)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def accuracy(labels: Sequence, probs: Sequence, threshold: float = 0.5) -> float:
    """Share of predictions (``prob >= threshold``) equal to the label; NaN for no labels."""
    y, p = as_arrays(labels, probs)
    return float(np.mean((p >= threshold) == (y == 1))) if y.size else float("nan")


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
    With one class only (a tiny val split) there is nothing to choose from: 0.5.
    """
    if method not in ("youden", "f1"):
        raise ValueError(f"threshold method must be 'youden' or 'f1', not {method!r}")
    y, p = as_arrays(labels, probs)
    if not both_classes(y):
        return {"threshold": 0.5, "method": method, "score": float("nan")}
    fpr, tpr, thr = roc_curve_points(y, p)
    if method == "youden":
        score = tpr - fpr
    elif method == "f1":
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        tp, fp = tpr * n_pos, fpr * n_neg
        score = np.where(tp > 0, 2 * tp / (2 * tp + fp + (n_pos - tp)), 0.0)
    score, thr_f = score[1:], thr[1:]  # the +inf point predicts nothing positive
    best = np.flatnonzero(np.isclose(score, score.max()))
    i = best[np.argmin(np.abs(thr_f[best] - 0.5))]
    lower = thr_f[i + 1] if i + 1 < thr_f.size else 0.0
    t = float((thr_f[i] + lower) / 2)
    return {"threshold": t, "method": method, "score": float(score[i])}


def group_metrics(
    labels: Sequence, probs: Sequence, groups: Sequence[str], threshold: float
) -> dict:
    """Per group value of the positives (e.g. mask type): n, mean probability, recall at
    ``threshold``, and AUC of that group's positives against all negatives."""
    y, p = as_arrays(labels, probs)
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
