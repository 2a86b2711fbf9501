"""Real-mask evaluation (issue 10) on real crops from ../shared/realdev: reading a real set,
framings, the numbers against scikit-learn, and ``evaluate --real`` on a real run."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import sklearn.metrics as skm

from maskdet.core.inference import read_predictions
from maskdet.core.real import FRAMINGS, describe, error_analysis, read_real_set, reframe
from maskdet.evaluation import evaluate as ev


def test_read_folders_records_unreadable_files(real_small, tmp_path):
    real = tmp_path / "r"
    shutil.copytree(real_small, real)
    (real / "mask" / "broken.png").write_bytes(b"\x89PNG not really")
    (real / "nomask" / "notes.txt").write_text("not an image")
    s = read_real_set(real)
    assert s.counts() == {"wearing_mask": 12, "not_wearing_mask": 12, "skipped": 2}
    reasons = {d["path"]: d["reason"] for d in s.skipped}
    assert set(reasons) == {"mask/broken.png", "nomask/notes.txt"} and all(reasons.values())
    assert all(im.ndim == 3 and im.shape[2] == 3 for im in s.images)
    assert [y for p, y in zip(s.paths, s.labels) if p.startswith("mask/")] == [1] * 12


def test_read_labels_csv(real_small, tmp_path):
    real = tmp_path / "r"
    shutil.copytree(real_small, real)
    rows = [
        (p.relative_to(real).as_posix(), int(p.parent.name == "mask"))
        for p in sorted(real.rglob("*.png"))
    ]
    with open(real / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows[:20])
    s = read_real_set(real / "labels.csv")
    assert len(s.paths) == 20 and sorted(zip(s.paths, s.labels)) == sorted(rows[:20])


def test_one_class_missing_is_a_clear_error(real_small, tmp_path):
    real = tmp_path / "r"
    shutil.copytree(real_small / "mask", real / "mask")
    with pytest.raises(ValueError, match=r"no readable not_wearing_mask \(nomask/\) images"):
        read_real_set(real)
    with pytest.raises(FileNotFoundError, match="mask/ and nomask/"):
        read_real_set(tmp_path / "nowhere")


def test_reframe_and_describe(real_small):
    im = read_real_set(real_small).images[0]
    for factor in FRAMINGS.values():
        out = reframe(im, factor)
        assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert np.array_equal(reframe(im, 1.5), im)  # the native framing is the crop itself
    tight = reframe(im, 1.0)  # the centre two thirds, enlarged
    assert np.abs(tight.astype(int) - im.astype(int)).mean() > 5
    d = describe(im)
    assert set(d) == {"lower_colour", "brightness", "sharpness"} and 0 <= d["brightness"] <= 255


def test_error_analysis_counts():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.1])
    desc = [{"lower_colour": c, "brightness": 100.0, "sharpness": 100.0} for c in "aabaab"]
    t = error_analysis(y, p, 0.5, desc)["lower_colour"]
    assert t["a"] == {"masked": 2, "recall": 0.5, "unmasked": 2, "false_positive_rate": 0.5}
    assert t["b"]["recall"] == 1.0 and t["b"]["false_positive_rate"] == 0.0


def test_evaluate_real_matches_sklearn(tiny_run, real_small):
    r = ev.evaluate_real(tiny_run, real_small, n_boot=100, wandb="disabled")
    saved = json.loads((tiny_run / "eval_real.json").read_text())
    d = read_predictions(tiny_run / "preds" / "real_eval.csv")
    assert len(d["label"]) == 24 and sum(d["label"]) == 12
    assert r["auc"]["auc"] == pytest.approx(skm.roc_auc_score(d["label"], d["prob"]))
    assert saved["auc"]["auc"] == pytest.approx(r["auc"]["auc"])
    thr = r["threshold_choice"]["threshold"]
    pred = np.asarray(d["prob"]) >= thr
    y = np.asarray(d["label"])
    assert r["at_threshold"]["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["at_threshold"]["specificity"] == pytest.approx(skm.recall_score(1 - y, ~pred))
    assert r["at_threshold"]["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["auc"]["low"] <= r["auc"]["auc"] <= r["auc"]["high"]
    assert set(r["framings"]) == set(FRAMINGS)
    assert r["framings"]["native"]["auc"] == pytest.approx(r["auc"]["auc"])
    assert set(r["error_analysis"]) == {"lower_colour", "brightness", "sharpness"}
    assert r["counts"] == {"wearing_mask": 12, "not_wearing_mask": 12, "skipped": 0}
    for name in ("roc", "pr", "confusion", "mistakes"):
        assert (tiny_run / "eval_real" / f"{name}.png").stat().st_size > 3000
