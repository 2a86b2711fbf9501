"""Stage 05 metrics checked against scikit-learn on known inputs (ties, imbalance, edge cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from maskdet.core import metrics
from maskdet.core.inference import read_predictions, write_predictions
from maskdet.evaluation import evaluate as ev
from maskdet.evaluation import figures


def _cases():
    rng = np.random.default_rng(3)
    # separable-ish scores, heavy ties (rounded), imbalance, and a hand-made example
    y1 = rng.integers(0, 2, 400)
    p1 = 1 / (1 + np.exp(-(2.0 * y1 - 1 + rng.normal(0, 1.3, 400))))
    y2 = rng.integers(0, 2, 300)
    p2 = np.round(np.clip(0.3 * y2 + rng.uniform(0, 0.7, 300), 0, 1), 1)  # many ties
    y3 = (rng.uniform(size=500) < 0.1).astype(int)
    p3 = np.clip(0.25 * y3 + rng.beta(2, 5, 500), 0, 1)
    y4 = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p4 = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.9, 0.05])
    return [(y1, p1), (y2, p2), (y3, p3), (y4, p4)]


@pytest.mark.parametrize("case", range(4))
def test_auc_ap_curves_match_sklearn(case):
    y, p = _cases()[case]
    assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert metrics.average_precision(y, p) == pytest.approx(
        skm.average_precision_score(y, p), abs=1e-12
    )
    fpr, tpr, thr = metrics.roc_curve_points(y, p)
    sfpr, stpr, sthr = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    np.testing.assert_allclose(thr[1:], sthr[1:])
    prec, rec, pthr = metrics.pr_curve_points(y, p)
    sprec, srec, spthr = skm.precision_recall_curve(y, p)
    np.testing.assert_allclose(prec, sprec)
    np.testing.assert_allclose(rec, srec)
    np.testing.assert_allclose(pthr, spthr)


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("threshold", [0.5, 0.37, 0.9])
def test_threshold_metrics_match_sklearn(case, threshold):
    y, p = _cases()[case]
    pred = (p >= threshold).astype(int)
    m = metrics.threshold_metrics(y, p, threshold)
    np.testing.assert_array_equal(
        metrics.confusion(y, p, threshold), skm.confusion_matrix(y, pred, labels=[0, 1])
    )
    sp, sr, sf, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    assert m["precision"] == pytest.approx(sp)
    assert m["recall"] == pytest.approx(sr)
    assert m["f1"] == pytest.approx(sf)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred, zero_division=0))


def test_tpr_at_fpr_is_best_point_within_budget():
    y, p = _cases()[0]
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    for target in (0.01, 0.05, 0.2):
        r = metrics.tpr_at_fpr(y, p, target)
        assert r["fpr"] <= target
        assert r["tpr"] == pytest.approx(tpr[fpr <= target].max())
        # the reported threshold really gives that TPR/FPR
        m = metrics.threshold_metrics(y, p, r["threshold"])
        assert m["recall"] == pytest.approx(r["tpr"]) and 1 - m["specificity"] == pytest.approx(
            r["fpr"]
        )


def test_choose_threshold_youden_and_f1():
    y, p = _cases()[0]
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    j = metrics.choose_threshold(y, p, "youden")
    m = metrics.threshold_metrics(y, p, j["threshold"])
    assert m["recall"] - (1 - m["specificity"]) == pytest.approx((tpr - fpr).max())
    f = metrics.choose_threshold(y, p, "f1")
    best_f1 = max(skm.f1_score(y, (p >= t).astype(int)) for t in np.unique(p))
    assert metrics.threshold_metrics(y, p, f["threshold"])["f1"] == pytest.approx(best_f1)
    with pytest.raises(ValueError):
        metrics.choose_threshold(y, p, "magic")


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded():
    rng = np.random.default_rng(0)

    def sample(n):
        y = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
        return y, 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.5, n))))

    y_s, p_s = sample(100)
    y_l, p_l = sample(3000)
    small = metrics.bootstrap_auc_ci(y_s, p_s, n_boot=400, seed=1)
    large = metrics.bootstrap_auc_ci(y_l, p_l, n_boot=400, seed=1)
    for ci in (small, large):
        assert ci["low"] < ci["auc"] < ci["high"]
        assert ci["auc"] == pytest.approx(
            skm.roc_auc_score(*((y_s, p_s) if ci is small else (y_l, p_l)))
        )
    assert (large["high"] - large["low"]) < 0.5 * (small["high"] - small["low"])
    assert metrics.bootstrap_auc_ci(y_s, p_s, n_boot=200, seed=7) == metrics.bootstrap_auc_ci(
        y_s, p_s, n_boot=200, seed=7
    )
    # grouped bootstrap: twins share a group; the interval still holds the estimate
    groups = np.arange(y_l.size) % (y_l.size // 2)
    g = metrics.bootstrap_auc_ci(y_l, p_l, n_boot=200, seed=1, groups=groups)
    assert g["method"] == "grouped" and g["low"] < g["auc"] < g["high"]


def test_group_metrics_and_mistakes():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.6, 0.1, 0.7, 0.3, 0.05])
    types = ["surgical", "surgical", "cloth", "cloth", "", "", "", ""]
    g = metrics.group_metrics(y, p, types, threshold=0.5)
    assert set(g) == {"surgical", "cloth"}
    assert g["surgical"]["recall"] == 1.0 and g["cloth"]["recall"] == 0.5
    sel = np.array([1, 1, 0, 0, 1, 1, 1, 1], bool)
    assert g["surgical"]["auc_vs_all_unmasked"] == pytest.approx(skm.roc_auc_score(y[sel], p[sel]))
    paths = [f"img{i}.png" for i in range(8)]
    mis = ev.confident_mistakes(paths, y, p, 0.5, k=5)
    assert [m["path"] for m in mis] == ["img2.png", "img5.png"]  # |0.2 - 1| > |0.7 - 0|
    res = ev.evaluate_predictions(
        y, p, threshold=0.5, paths=paths, groups={"mask_type": types}, n_boot=50
    )
    json.dumps(res)  # JSON-able
    assert res["confusion_at_threshold"] == skm.confusion_matrix(y, (p >= 0.5).astype(int)).tolist()


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="length"):
        metrics.roc_auc([0, 1], [0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([0, 1], [0.2, float("nan")])


def test_epoch_files_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    y, p = _cases()[0]
    rng = np.random.default_rng(1)
    for e in (1, 2, 3):
        noisy = np.clip(p + rng.normal(0, 0.4 / e, p.size), 0, 1)
        write_predictions(
            tmp_path / "preds" / f"val_epoch_{e:03d}.csv",
            [f"f{i}" for i in range(y.size)],
            y,
            noisy,
        )
    epochs = ev.epoch_predictions(tmp_path)
    aucs = ev.epoch_aucs(epochs)
    assert sorted(aucs) == [1, 2, 3]
    d = read_predictions(tmp_path / "preds" / "val_epoch_002.csv")
    assert aucs[2] == pytest.approx(skm.roc_auc_score(d["label"], d["prob"]))
    for fig in (figures.plot_epoch_rocs(epochs), figures.plot_auc_vs_epoch(aucs)):
        fig.savefig(tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 5000


def test_evaluate_run_end_to_end(tiny_run, masked_mini):
    """A real run: JSON with every section, PNGs, predictions CSV, TensorBoard tags read back."""
    import matplotlib

    matplotlib.use("Agg")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from maskdet.core.manifest import read_manifest, usable

    r = ev.evaluate_run(tiny_run, "test", n_boot=100, wandb="disabled", workers=0)
    saved = json.loads((tiny_run / "eval_test.json").read_text())
    assert saved["auc"]["auc"] == pytest.approx(r["auc"]["auc"])
    n_test = len(usable(read_manifest(masked_mini), "test"))
    assert r["n"] == n_test and r["n_pos"] == r["n_neg"]  # every test face and its twin
    d = read_predictions(tiny_run / "preds" / "test_eval.csv")
    assert r["auc"]["auc"] == pytest.approx(skm.roc_auc_score(d["label"], d["prob"]))
    assert (
        r["auc"]["method"] == "grouped" and r["auc"]["low"] <= r["auc"]["auc"] <= r["auc"]["high"]
    )
    assert set(r["groups"]) == {"mask_type", "mask_color"} and r["groups"]["mask_type"]
    assert sum(g["n"] for g in r["groups"]["mask_type"].values()) == r["n_pos"]
    assert r["at_threshold"]["threshold"] == pytest.approx(r["threshold_choice"]["threshold"])
    for name in (
        "roc",
        "pr",
        "confusion",
        "groups_mask_type",
        "mistakes",
        "epoch_rocs",
        "auc_vs_epoch",
    ):
        assert (tiny_run / "eval_test" / f"{name}.png").stat().st_size > 3000
    assert sorted(r["val_auc_per_epoch"]) == ["1", "2"]  # epochs numbered from 1
    # the threshold chosen again on val (max F1) instead of the checkpoint's
    f1 = ev.evaluate_run(
        tiny_run,
        "test",
        n_boot=50,
        wandb="disabled",
        tensorboard=False,
        workers=0,
        threshold_method="f1",
    )
    assert f1["threshold_choice"]["method"] == "val, f1"
    assert f1["at_threshold"]["threshold"] == f1["threshold_choice"]["threshold"]
    assert f1["auc"]["auc"] == pytest.approx(r["auc"]["auc"])  # same predictions, another threshold
    acc = EventAccumulator(str(tiny_run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert {"test/auc", "test/auc_ci_low", "test/average_precision"} <= set(acc.Tags()["scalars"])
    assert "test/roc" in acc.Tags()["images"]
