"""Masks worn wrong (issue 23, evaluation): ``evaluate --real`` reads a real set's ``worn/``
folder (real crops from ../shared/realdev/worn, copied to tmp), keeps those faces out of the
binary ROC and reports them on their own; a set without ``worn/`` evaluates as before."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as skm

from maskdet.__main__ import main
from maskdet.core.inference import read_predictions
from maskdet.core.real import UNCATEGORISED, read_real_set
from maskdet.evaluation import evaluate as ev
from maskdet.evaluation.worn import worn_table

from .conftest import REALDEV

PER_CLASS = 6
PER_CATEGORY = 2
CATEGORIES = ("chin", "nose_out", "other_wrong")
BINARY_KEYS = (
    "n",
    "n_pos",
    "n_neg",
    "auc",
    "average_precision",
    "at_0.5",
    "at_threshold",
    "tpr_at_fpr",
    "confusion_at_threshold",
    "roc",
    "pr",
    "mistakes",
    "framings",
    "error_analysis",
)
"""The binary sections of ``eval_real.json``: the same with and without ``worn/``."""


def _worn_rows() -> list[dict[str, str]]:
    with open(REALDEV / "worn" / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r for c in CATEGORIES for r in [r for r in rows if r["category"] == c][:PER_CATEGORY]]


def _write_worn_labels(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory) -> tuple[Path, Path]:
    """The same real mask/ and nomask/ crops twice: without and with a ``worn/`` folder
    (two crops of each category, with realdev's ``worn/labels.csv`` rows)."""
    if not (REALDEV / "worn" / "labels.csv").exists():
        pytest.fail(
            f"{REALDEV}/worn is missing: the tests need ../shared/realdev beside the checkout"
        )
    root = tmp_path_factory.mktemp("worn")
    plain, with_worn = root / "plain", root / "with_worn"
    for sub in ("mask", "nomask"):
        (plain / sub).mkdir(parents=True)
        for f in sorted((REALDEV / sub).glob("*.png"))[:PER_CLASS]:
            shutil.copyfile(f, plain / sub / f.name)
    shutil.copytree(plain, with_worn)
    (with_worn / "worn").mkdir()
    rows = _worn_rows()
    for r in rows:
        shutil.copyfile(REALDEV / "worn" / r["path"], with_worn / "worn" / r["path"])
    _write_worn_labels(with_worn / "worn", rows)
    return plain, with_worn


def _run_dir(tmp_path: Path, checkpoint: Path) -> Path:
    """A run folder holding the (untrained, real) ResNet-18 checkpoint."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "best.pt").symlink_to(checkpoint)
    return run


def test_default_reading_leaves_worn_out(real_sets):
    plain, with_worn = real_sets
    a, b = read_real_set(plain, worn=True), read_real_set(with_worn)
    assert a.counts() == b.counts() == {"wearing_mask": 6, "not_wearing_mask": 6, "skipped": 0}
    assert not a.has_worn and not b.worn_paths  # no worn/, or not asked for (training)
    w = read_real_set(with_worn, worn=True)
    assert w.counts() == {
        "wearing_mask": 6,
        "not_wearing_mask": 6,
        "skipped": 0,
        "worn_wrong": 6,
    }
    assert w.paths == a.paths and w.labels == a.labels
    assert sorted(w.worn_categories) == sorted(c for c in CATEGORIES for _ in range(PER_CATEGORY))
    assert all(p.startswith("worn/") for p in w.worn_paths)


def test_unreadable_worn_files_one_line(real_sets, tmp_path, capsys):
    real = tmp_path / "r"
    shutil.copytree(real_sets[1], real)
    rows = _worn_rows()
    rows.append({**rows[0], "path": "broken.png"})
    rows.append({**rows[0], "path": "gone.png"})
    _write_worn_labels(real / "worn", rows)
    (real / "worn" / "broken.png").write_bytes(b"\x89PNG not really")
    shutil.copyfile(
        real / "mask" / sorted(p.name for p in (real / "mask").iterdir())[0],
        real / "worn" / "unlisted.png",
    )
    s = read_real_set(real, worn=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert "3 files skipped" in lines[0]
    for name in ("worn/broken.png", "worn/gone.png", "worn/unlisted.png"):
        assert name in lines[0]
    assert s.counts() == {
        "wearing_mask": 6,
        "not_wearing_mask": 6,
        "skipped": 3,
        "worn_wrong": 6,
    }
    reasons = {d["path"]: d["reason"] for d in s.skipped}
    assert "labels.csv" in reasons["worn/unlisted.png"] and all(reasons.values())
    read_real_set(real_sets[1], worn=True)  # a readable worn/ prints nothing
    assert capsys.readouterr().out == ""


def test_worn_without_labels_csv_and_bad_columns(real_sets, tmp_path):
    real = tmp_path / "r"
    shutil.copytree(real_sets[1], real)
    (real / "worn" / "labels.csv").unlink()
    s = read_real_set(real, worn=True)
    assert s.worn_categories == [UNCATEGORISED] * 6 and not s.skipped
    (real / "worn" / "labels.csv").write_text("file,kind\na.png,chin\n")
    with pytest.raises(ValueError, match="needs the columns path,category"):
        read_real_set(real, worn=True)


def test_worn_out_of_the_binary_roc_and_reported(real_sets, real_checkpoint, tmp_path):
    plain, with_worn = real_sets
    run_a = _run_dir(tmp_path / "a", real_checkpoint)
    run_b = _run_dir(tmp_path / "b", real_checkpoint)
    a = ev.evaluate_real(run_a, plain, n_boot=50, wandb="disabled", tensorboard=False)
    b = ev.evaluate_real(run_b, with_worn, n_boot=50, wandb="disabled", tensorboard=False)
    # without worn/: no worn section and no worn files (as before)
    assert "worn_wrong" not in a and "worn_wrong" not in a["counts"]
    assert not (run_a / "eval_real_worn.csv").exists()
    assert not (run_a / "preds" / "real_worn_eval.csv").exists()
    assert not (run_a / "eval_real" / "worn_examples.png").exists()
    # with worn/: the binary numbers and predictions are the same, the worn faces in neither class
    for key in BINARY_KEYS:  # as JSON: NaN (a bucket without one class) equals NaN
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key
    assert b["n"] == 2 * PER_CLASS
    assert (run_a / "preds/real_eval.csv").read_bytes() == (
        run_b / "preds/real_eval.csv"
    ).read_bytes()
    assert b["counts"]["worn_wrong"] == 3 * PER_CATEGORY
    # the worn numbers against scikit-learn, from the written predictions
    worn = b["worn_wrong"]
    assert (
        json.loads((run_b / "eval_real.json").read_text())["worn_wrong"]["table"] == worn["table"]
    )
    d = read_predictions(run_b / "preds" / "real_eval.csv")
    mask_p = np.array([p for p, y in zip(d["prob"], d["label"]) if y == 1])
    with open(run_b / "preds" / "real_worn_eval.csv", newline="") as fh:
        preds = list(csv.DictReader(fh))
    thr = b["threshold_choice"]["threshold"]
    assert worn["threshold"] == thr and worn["n_mask"] == PER_CLASS
    assert list(worn["table"]) == ["all", *CATEGORIES]
    for name, row in worn["table"].items():
        sel = [r for r in preds if name in ("all", r["category"])]
        p = np.array([float(r["prob"]) for r in sel])
        assert [int(r["wearing_mask"]) for r in sel] == [int(q >= thr) for q in p]
        assert row["n"] == len(sel) == (6 if name == "all" else 2)
        assert row["called_mask_on"] == int((p >= thr).sum())
        assert row["share_called_mask_on"] == pytest.approx((p >= thr).mean())
        y = np.r_[np.ones(mask_p.size), np.zeros(p.size)]
        auc = skm.roc_auc_score(y, np.r_[mask_p, p])
        assert row["auc_mask_vs_worn"] == pytest.approx(auc, abs=1e-6)
        assert row["auc_low"] <= row["auc_mask_vs_worn"] <= row["auc_high"]
    with open(run_b / "eval_real_worn.csv", newline="") as fh:
        table = {r["category"]: r for r in csv.DictReader(fh)}
    assert set(table) == set(worn["table"])
    assert float(table["all"]["auc_mask_vs_worn"]) == pytest.approx(
        worn["table"]["all"]["auc_mask_vs_worn"]
    )
    # examples: the highest p(mask) of each category, with a figure
    by_path = {r["path"]: float(r["prob"]) for r in preds}
    for c in CATEGORIES:
        ex = [e for e in worn["examples"] if e["category"] == c]
        top = sorted((r for r in preds if r["category"] == c), key=lambda r: -float(r["prob"]))
        assert [e["path"] for e in ex] == [r["path"] for r in top]
        assert all(e["prob"] == pytest.approx(by_path[e["path"]]) for e in ex)
    assert (run_b / "eval_real" / "worn_examples.png").stat().st_size > 3000
    text = worn_table(worn)
    assert len(text.splitlines()) == 2 + 4 and "nose_out" in text


def test_cli_prints_the_worn_table(real_sets, real_checkpoint, tmp_path, capsys):
    run = _run_dir(tmp_path, real_checkpoint)
    argv = ["evaluate", "--run", str(run), "--real", str(real_sets[1])]
    assert main([*argv, "--bootstrap", "20", "--wandb", "disabled"]) in (0, None)
    out = capsys.readouterr().out
    table = out[out.index("masks worn wrong") :].splitlines()
    assert [line.split()[0] for line in table[2:]] == ["all", *CATEGORIES]
    assert '"worn_wrong": 6' in out  # in the counts


def test_a_built_real_set_reads_with_its_worn_part(tmp_path):
    """Colab's real set (``realset``, built from the photos) has ``worn/labels.csv`` in
    realdev's format: ``evaluate --real`` reads its categories as it reads ../shared/realdev's."""
    from maskdet.evaluation import evalsets

    from .evalset_helpers import real_source

    index = real_source(tmp_path / "src", per_class=2, worn=4)
    evalsets.build_realdev(tmp_path / "rd", tmp_path / "src", index, progress=False)
    built = (tmp_path / "rd" / "worn" / "labels.csv").read_bytes()
    shared = (REALDEV / "worn" / "labels.csv").read_bytes()
    assert built.splitlines(keepends=True)[0] == shared.splitlines(keepends=True)[0]
    s = read_real_set(tmp_path / "rd", worn=True)
    with open(REALDEV / "worn" / "labels.csv", newline="", encoding="utf-8") as fh:
        first = list(csv.DictReader(fh))[:4]
    assert s.worn_paths == sorted("worn/" + r["path"] for r in first)
    category = {"worn/" + r["path"]: r["category"] for r in first}
    assert s.worn_categories == [category[p] for p in s.worn_paths]
