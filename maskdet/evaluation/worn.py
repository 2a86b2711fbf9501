"""Masks worn wrong (the real set's ``worn/``: under the nose, on the chin, other): in neither
class of the binary ROC, reported on their own for the binary model by :func:`worn_wrong_report`
(the share called wearing_mask, the AUC of proper masks against them), as a text table and CSVs.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.constants import PREDS_DIRNAME
from ..core.inference import MaskClassifier
from ..core.metrics import bootstrap_auc_ci
from ..core.real import RealSet, clusters, worn_clusters

WORN_NOTE = (
    "masks worn wrong (worn/: under the nose, on the chin, other) are in neither class of the "
    "binary ROC; reported on their own for the binary model: the share called wearing_mask at "
    "the val threshold, and the AUC of p(mask) separating the proper masks (mask/, positive) "
    "from them (1.0: every proper mask above every worn-wrong face; 0.5: no separation). There is "
    "no worn-wrong answer yet (no third class): these numbers say what the binary model does."
)
WORN_TABLE_COLUMNS = (
    "category",
    "n",
    "called_mask_on",
    "share_called_mask_on",
    "auc_mask_vs_worn",
    "auc_low",
    "auc_high",
)


def worn_wrong_report(
    mask_probs: Sequence[float],
    worn_probs: Sequence[float],
    worn_paths: Sequence[str],
    categories: Sequence[str],
    threshold: float,
    mask_groups: Sequence | None = None,
    worn_groups: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_examples: int = 4,
) -> dict:
    """The binary model on real masks worn wrong, for all of them (``"all"``) and per category:
    how many it calls wearing_mask at ``threshold``, and the AUC (bootstrap interval, resampling
    ``*_groups`` together: the source photos) of p(mask) with the proper masks (``mask_probs``)
    as positives and the worn-wrong faces as negatives; with ``examples``, the ``n_examples``
    crops of each category with the highest p(mask) (the first a door would let in)."""
    mask_p = np.asarray(mask_probs, dtype=float)
    worn_p = np.asarray(worn_probs, dtype=float)
    cats = np.asarray(categories, dtype=object)
    groups = None
    if mask_groups is not None and worn_groups is not None:
        groups = np.asarray([*mask_groups, *worn_groups], dtype=object)
    table = {}
    for name in ("all", *sorted(set(categories))):
        sel = np.ones(worn_p.size, bool) if name == "all" else cats == name
        y = np.r_[np.ones(mask_p.size, int), np.zeros(int(sel.sum()), int)]
        g = None if groups is None else groups[np.r_[np.ones(mask_p.size, bool), sel]]
        auc = bootstrap_auc_ci(y, np.r_[mask_p, worn_p[sel]], n_boot=n_boot, seed=seed, groups=g)
        called = worn_p[sel] >= threshold
        table[name] = {
            "n": int(sel.sum()),
            "called_mask_on": int(called.sum()),
            "share_called_mask_on": float(called.mean()),
            "auc_mask_vs_worn": auc["auc"],
            "auc_low": auc["low"],
            "auc_high": auc["high"],
        }
    examples = []
    for name in sorted(set(categories)):
        idx = np.flatnonzero(cats == name)
        for i in idx[np.argsort(-worn_p[idx], kind="mergesort")][:n_examples]:
            examples.append(
                {"path": str(worn_paths[i]), "category": name, "prob": float(worn_p[i])}
            )
    return {
        "note": WORN_NOTE,
        "threshold": float(threshold),
        "n_mask": int(mask_p.size),
        "table": table,
        "examples": examples,
    }


def worn_table(worn: dict) -> str:
    """:func:`worn_wrong_report` as one short text table (what ``evaluate --real`` prints)."""
    lines = [
        f"masks worn wrong (in neither class of the binary ROC): called wearing_mask at the val "
        f"threshold {worn['threshold']:.3f}; AUC of p(mask), mask/ ({worn['n_mask']}) against them",
        f"{'category':<14}{'n':>5}  {'called mask on':<16}{'AUC mask/ vs worn/ [95%]'}",
    ]
    for name, row in worn["table"].items():
        called = f"{row['called_mask_on']} ({row['share_called_mask_on']:.1%})"
        lines.append(
            f"{name:<14}{row['n']:>5}  {called:<16}{row['auc_mask_vs_worn']:.3f} "
            f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]"
        )
    return "\n".join(lines)


def _write_rows(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    """A CSV of ``rows`` (floats with 8 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, columns, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: f"{v:.8g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def worn_part(
    run_dir: Path,
    real: RealSet,
    clf: MaskClassifier,
    probs: Sequence[float],
    thr: float,
    n_boot: int,
    seed: int,
) -> dict:
    """:func:`worn_wrong_report` of the real set's ``worn/`` crops, and its CSVs:
    ``RUN_DIR/preds/real_worn_eval.csv`` (path, category, prob, wearing_mask at the threshold)
    and ``RUN_DIR/eval_real_worn.csv`` (the table)."""
    worn_probs = clf.probs(real.worn_images, batch_size=64)
    mask = np.asarray(real.labels) == 1
    worn = worn_wrong_report(
        np.asarray(probs)[mask],
        worn_probs,
        real.worn_paths,
        real.worn_categories,
        thr,
        mask_groups=[c for c, m in zip(clusters(real), mask) if m],
        worn_groups=worn_clusters(real),
        n_boot=n_boot,
        seed=seed,
    )
    preds = _write_rows(
        run_dir / PREDS_DIRNAME / "real_worn_eval.csv",
        [
            {"path": p, "category": c, "prob": float(q), "wearing_mask": int(q >= thr)}
            for p, c, q in zip(real.worn_paths, real.worn_categories, worn_probs)
        ],
        ("path", "category", "prob", "wearing_mask"),
    )
    table = _write_rows(
        run_dir / "eval_real_worn.csv",
        [{"category": name, **row} for name, row in worn["table"].items()],
        WORN_TABLE_COLUMNS,
    )
    worn["files"] = {"predictions": str(preds), "table": str(table)}
    worn["root"] = str(real.root)  # the crops' paths are relative to it
    return worn
