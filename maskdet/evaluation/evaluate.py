"""Stage 05: evaluation of a training run (test split with intervals, groups, mistakes, every
epoch's val ROC), written as ``eval_<split>.json`` and figures, and logged to the same sinks as
training. The numbers come from :mod:`maskdet.core.metrics`, the figures from :mod:`maskdet.evaluation.figures`,
the report on masks worn wrong from :mod:`maskdet.evaluation.worn`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..core.checkpoint import load_model
from ..core.checks import check_stage04
from ..core.constants import PREDS_DIRNAME, ROOT
from ..core.inference import (
    MaskClassifier,
    epoch_prediction_files,
    read_predictions,
    write_predictions,
)
from ..core.manifest import MANIFEST_NAME, read_manifest
from ..core.metrics import (
    as_arrays,
    average_precision,
    bootstrap_auc_ci,
    both_classes,
    choose_threshold,
    confusion,
    group_metrics,
    pr_curve_points,
    roc_auc,
    roc_curve_points,
    threshold_metrics,
    tpr_at_fpr,
)
from ..core.real import FRAMINGS, clusters, describe, error_analysis, read_real_set, reframe
from ..training.scoring import predict_split
from ..training.sinks import EpochExtras, Sink, TensorBoardSink, WandbSink
from . import figures
from .worn import worn_part

FPR_TARGETS = (0.01, 0.05)


def confident_mistakes(
    paths: Sequence[str], labels: Sequence, probs: Sequence, threshold: float = 0.5, k: int = 16
) -> list[dict]:
    """The ``k`` wrong predictions at ``threshold`` with the most confidence (largest |p - label|)."""
    y, p = as_arrays(labels, probs)
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
    y, p = as_arrays(labels, probs)
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


def epoch_predictions(run_dir: str | os.PathLike) -> dict[int, dict[str, list]]:
    """Every epoch's saved val predictions (``path``, ``label``, ``prob`` lists) by epoch, or a
    clear error naming the stage to run."""
    files = epoch_prediction_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"no per-epoch predictions in {Path(run_dir) / PREDS_DIRNAME}: train first"
        )
    return {epoch: read_predictions(f) for epoch, f in files.items()}


def epoch_aucs(epochs: dict[int, dict[str, list]]) -> dict[int, float]:
    """Val AUC of every epoch of :func:`epoch_predictions` (NaN for an epoch with one class)."""
    return {
        epoch: roc_auc(d["label"], d["prob"])
        if both_classes(np.asarray(d["label"]))
        else float("nan")
        for epoch, d in epochs.items()
    }


# ------------------------------------------------------------------------ a whole run


def _resolve_data_dir(data_dir: str | os.PathLike | None, meta: dict) -> Path:
    cand = Path(data_dir or meta.get("hparams", {}).get("data", ""))
    for p in (cand, ROOT / cand):
        if (p / MANIFEST_NAME).exists():
            return p
    raise FileNotFoundError(
        f"no manifest.csv in {cand}: pass --data DATA_DIR (the data the run was trained on)"
    )


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
    progress: bool = True,
) -> dict:
    """Evaluate a training run's best checkpoint on ``split``: all numbers, JSON and PNGs
    (``progress``: a text bar (:mod:`maskdet.core.progress`) over the split's batches).

    Writes ``RUN_DIR/eval_<split>.json``, ``RUN_DIR/preds/<split>_eval.csv`` and figures in
    ``RUN_DIR/eval_<split>/``; logs the scalars and figures to TensorBoard (``RUN_DIR/tb``, tags
    ``<split>/...``) and to a WandB run named ``<run>-eval-<split>``. The operating threshold:
    ``threshold_method="checkpoint"`` (default) takes the one chosen on val at training time
    (stored in the checkpoint); ``"youden"`` or
    ``"f1"`` choose it again on val with :func:`maskdet.core.metrics.choose_threshold`.
    """
    run_dir = Path(run_dir)
    ckpt_path = check_stage04(run_dir, checkpoint)
    model, meta = load_model(ckpt_path, device)
    data_dir = _resolve_data_dir(data_dir, meta)
    manifest = read_manifest(data_dir)  # read once, passed down
    pred = predict_split(
        model,
        data_dir,
        split,
        limit=limit,
        device=device,
        workers=workers,
        rows=manifest,
        progress=progress,
    )
    if threshold_method == "checkpoint":
        thr = {
            "threshold": float(meta["threshold"]),
            "method": "checkpoint (chosen on val at training time, Youden's J)",
        }
    else:
        val = predict_split(
            model, data_dir, "val", limit=limit, device=device, workers=workers, rows=manifest
        )
        thr = choose_threshold(val["labels"], val["probs"], threshold_method)
        thr["method"] = f"val, {thr['method']}"
    rows = {r["path"]: r for r in manifest}
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
        "roc": figures.plot_roc(result, title=f"{split} ROC (best epoch {meta.get('epoch')})"),
        "pr": figures.plot_pr(result, title=f"{split} precision-recall"),
        "confusion": figures.plot_confusion(result),
        "groups_mask_type": figures.plot_groups(result, "mask_type"),
        "groups_mask_color": figures.plot_groups(result, "mask_color"),
        "mistakes": figures.mistakes_gallery(
            result["mistakes"], data_dir, title=f"{split}: most confident mistakes"
        ),
    }
    if epoch_prediction_files(run_dir):
        epochs = epoch_predictions(run_dir)
        aucs = epoch_aucs(epochs)
        figs["epoch_rocs"] = figures.plot_epoch_rocs(epochs)
        figs["auc_vs_epoch"] = figures.plot_auc_vs_epoch(aucs)
        result["val_auc_per_epoch"] = {str(k): v for k, v in aucs.items()}
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


def evaluate_real(
    run_dir: str | os.PathLike,
    real_dir: str | os.PathLike,
    checkpoint: str = "best.pt",
    n_boot: int = 1000,
    seed: int = 0,
    wandb: str = "auto",
    tensorboard: bool = True,
    device: str = "cpu",
    limit: int | None = None,
) -> dict:
    """Evaluate a run's checkpoint on a real set (``mask/`` + ``nomask/``, or ``labels.csv``):
    the numbers of :func:`evaluate_predictions` at the checkpoint's (val) threshold, with the
    bootstrap over source photos, AUC/recall/specificity per framing (:data:`FRAMINGS`), the
    error analysis by lower-face colour, brightness and sharpness, and the unreadable files.
    When the set has a ``worn/`` folder (masks worn wrong), its faces count in neither class of
    those numbers: ``worn_wrong`` (:func:`maskdet.evaluation.worn.worn_wrong_report`, also
    ``RUN_DIR/eval_real_worn.csv``, ``RUN_DIR/preds/real_worn_eval.csv`` and
    ``eval_real/worn_examples.png``) reports them.

    Writes ``RUN_DIR/eval_real.json``, ``RUN_DIR/preds/real_eval.csv`` and figures (ROC, PR,
    confusion, the most confident real mistakes) in ``RUN_DIR/eval_real/``, and logs them to
    TensorBoard and WandB under ``real/``."""
    run_dir = Path(run_dir)
    ckpt_path = check_stage04(run_dir, checkpoint)
    model, meta = load_model(ckpt_path, device)
    clf = MaskClassifier.from_model(model, meta, device)
    real = read_real_set(real_dir, limit, worn=True)
    thr = float(meta["threshold"])
    probs = clf.probs(real.images, batch_size=64)
    result = evaluate_predictions(
        real.labels,
        probs,
        thr,
        paths=real.paths,
        clusters=clusters(real),
        n_boot=n_boot,
        seed=seed,
    )
    framings = {}
    for name, factor in FRAMINGS.items():
        p = probs if name == "native" else clf.probs([reframe(im, factor) for im in real.images])
        framings[name] = {"factor": factor, "auc": roc_auc(real.labels, p)} | {
            k: v
            for k, v in threshold_metrics(real.labels, p, thr).items()
            if k in ("recall", "specificity", "accuracy")
        }
    result.update(
        {
            "split": "real",
            "real_dir": str(real_dir),
            "run_dir": str(run_dir),
            "checkpoint": str(ckpt_path),
            "best_epoch": meta.get("epoch"),
            "best_val_auc": meta.get("val_auc"),
            "arch": meta.get("arch"),
            "threshold_choice": {
                "threshold": thr,
                "method": "checkpoint (chosen on synthetic val)",
            },
            "framings": framings,
            "error_analysis": error_analysis(
                real.labels, probs, thr, [describe(im) for im in real.images]
            ),
            "counts": real.counts(),
            "skipped_images": real.skipped,
            "bootstrap_note": "percentile bootstrap over source photos (faces of one photo move together)",
        }
    )
    write_predictions(run_dir / PREDS_DIRNAME / "real_eval.csv", real.paths, real.labels, probs)
    fig_dir = run_dir / "eval_real"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = {
        "roc": figures.plot_roc(result, title="real faces: ROC"),
        "pr": figures.plot_pr(result, title="real faces: precision-recall"),
        "confusion": figures.plot_confusion(result),
        "mistakes": figures.mistakes_gallery(
            result["mistakes"], real.root, title="real faces: most confident mistakes"
        ),
    }
    if real.worn_paths:  # worn/: in neither class above, reported on its own
        result["worn_wrong"] = worn_part(run_dir, real, clf, probs, thr, n_boot, seed)
        figs["worn_examples"] = figures.worn_gallery(result["worn_wrong"])
    result["figures"] = {}
    for name, fig in figs.items():
        path = fig_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        result["figures"][name] = str(path)
    (run_dir / "eval_real.json").write_text(json.dumps(result, indent=1, default=float))
    _log_eval(run_dir, "real", result, figs, meta, wandb, tensorboard)
    for fig in figs.values():
        plt.close(fig)
    return result


def evaluate_real_if_present(run_dir: str | os.PathLike, real_dir: str, **kw) -> dict | None:
    """:func:`evaluate_real` when ``real_dir`` holds a real set; else a one-line note and None
    (on Colab there is no ``../shared/realdev``: upload ``mask/`` and ``nomask/`` folders)."""
    if not real_dir or not Path(real_dir).exists():
        print(
            f"no real set at {real_dir!r}: real-mask numbers need real crops in mask/ and "
            "nomask/ folders (or a labels.csv); set REAL_DIR to such a folder"
        )
        return None
    return evaluate_real(run_dir, real_dir, **kw)


SIDE_BY_SIDE = (
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "recall_at_val_threshold",
    "specificity_at_val_threshold",
    "accuracy_at_val_threshold",
)
"""The numbers that stand side by side when a synthetic result meets a real one."""


def side_by_side(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{name: {number: value}}`` of :data:`SIDE_BY_SIDE` for each named result (e.g. the
    synthetic test split and the real faces), for one table."""
    return {name: {k: headline(r)[k] for k in SIDE_BY_SIDE} for name, r in results.items()}


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
    step = int(meta.get("epoch") or 0)
    scalars = {f"{split}/{k}": v for k, v in headline(result).items()}
    for name, row in result.get("worn_wrong", {}).get("table", {}).items():
        for key in ("share_called_mask_on", "auc_mask_vs_worn"):
            scalars[f"{split}/worn_{name}/{key}"] = row[key]
    sinks: list[Sink] = [TensorBoardSink(run_dir)] if tensorboard else []
    if wandb_mode != "disabled":
        config = {"split": split, "checkpoint": result["checkpoint"], **meta.get("hparams", {})}
        sinks.append(WandbSink(run_dir, config, wandb_mode, name=f"{run_dir.name}-eval-{split}"))
    extras = EpochExtras(figures={f"{split}/{name}": fig for name, fig in figs.items()})
    for sink in sinks:
        sink.log(step, scalars, extras)
        sink.close(final=scalars)
