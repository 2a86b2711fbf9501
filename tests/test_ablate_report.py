"""Ablation plumbing (held-out mask type view, table, summary) and the HTML report, on real runs."""

from __future__ import annotations

import json

import nbformat
import pytest

from maskdet.core.manifest import read_manifest, usable
from maskdet.evaluation import ablate
from maskdet.evaluation.figures import summary_figure


def test_held_out_view_removes_type_and_twins_from_train_only(tmp_path, masked_mini):
    t = ablate.most_common_mask_type(masked_mini)
    view = ablate.held_out_data(masked_mini, t, tmp_path / "view")
    rows = read_manifest(view)
    orig = read_manifest(masked_mini)
    assert len(rows) == len(orig)  # every image still accounted for
    train = usable(rows, "train") + usable(rows, "val")
    assert train and not any(r["mask_type"] == t for r in train)
    pairs = {r["pair_id"] for r in train}
    assert all(sum(r["pair_id"] == p for r in train) == 2 for p in pairs)  # twins stay together
    assert usable(rows, "test") == usable(orig, "test")  # the test split is untouched
    assert all(
        r["reason"].startswith("held out")
        for r in rows
        if r["status"] == "excluded" and r["mask_type"] == t
    )
    assert (view / "train").resolve() == (masked_mini / "train").resolve()


@pytest.mark.slow
def test_ablate_smoke_table_and_summary(tmp_path, masked_mini):
    rows = ablate.run_ablations(
        str(masked_mini),
        str(tmp_path / "abl"),
        "smoke",
        experiments=("lr", "held_out"),
        seeds=[0, 1],
        workers=0,
        device="cpu",
    )
    assert [(r["experiment"], r["seed"]) for r in rows] == [
        ("baseline", 0),
        ("baseline", 1),
        ("lr", 0),
        ("lr", 1),
        ("held_out", 0),
        ("held_out", 1),
    ]
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    for r in rows:
        assert 0.0 <= r["test_auc_low"] <= r["test_auc"] <= r["test_auc_high"] <= 1.0
    held = [r for r in rows if r["experiment"] in ("baseline", "held_out")]
    assert all(r["held_out_type"] and r["held_out_recall"] is not None for r in held)
    saved = ablate.read_table(tmp_path / "abl")
    summ = {(s["experiment"], s["variant"]): s for s in saved["summary"]}
    assert all(s["seeds"] == 2 for s in summ.values())
    lr = [r["test_auc"] for r in rows if r["experiment"] == "lr"]
    s = next(v for k, v in summ.items() if k[0] == "lr")
    assert s["test_auc_mean"] == pytest.approx(sum(lr) / 2, abs=1e-4)
    assert any("synthesizer" in n for n in saved["notes"]) is False  # not asked for, so no note
    assert (tmp_path / "abl" / "ablations.csv").read_text().count("\n") == len(rows) + 1


@pytest.mark.slow
def test_variant_names_say_when_imagenet_weights_were_not_loaded(tmp_path, masked_mini):
    rows = ablate.run_ablations(
        str(masked_mini),
        str(tmp_path / "abl"),
        "smoke",
        experiments=("init",),
        seeds=[0],
        workers=0,
        device="cpu",
    )
    init = next(r for r in rows if r["experiment"] == "init")  # smoke: random -> ImageNet
    assert init["status"] == "ok"
    if init["imagenet_weights"]:  # weights in the torch cache: the name stays
        assert init["variant"] == "ImageNet"
    else:  # offline: the arm trained from random init, and its name says so
        assert init["variant"] == "random init (no ImageNet)"


@pytest.mark.slow
def test_cross_synthesizer_runs_on_twin_data(tmp_path, masked_mini):
    from maskdet.synthesis.synthesis import copy_faces, synthesize_dataset

    other = copy_faces(masked_mini, tmp_path / "other")
    faces = lambda d: sorted(  # noqa: E731
        (r["path"], r["split"], r["identity"])
        for r in read_manifest(d)
        if r["label"] == "not_wearing_mask"
    )
    assert faces(other) == faces(masked_mini)  # the same faces, splits and people
    assert {r["label"] for r in read_manifest(other)} == {"not_wearing_mask"}  # no masks yet
    # CI has no MaskTheFace checkout: a second builtin draw (another seed) stands in for it
    synthesize_dataset(other, backend="builtin", seed=7, workers=1, progress=False)
    a = {r["pair_id"]: r for r in usable(read_manifest(masked_mini)) if r["mask_type"]}
    b = {r["pair_id"]: r for r in usable(read_manifest(other)) if r["mask_type"]}
    assert set(a) & set(b) and any(a[k]["mask_type"] != b[k]["mask_type"] for k in set(a) & set(b))
    rows = ablate.run_ablations(
        str(masked_mini),
        str(tmp_path / "abl"),
        "smoke",
        other_data=str(other),
        experiments=("synthesizer",),
        workers=0,
        device="cpu",
    )
    got = [(r["experiment"], r["variant"], r["train_data"], r["test_data"]) for r in rows]
    A, B = str(masked_mini), str(other)
    assert got == [
        ("baseline", got[0][1], A, A),
        ("synthesizer", "train A, test B", A, B),
        ("synthesizer", "train B, test B", B, B),
        ("synthesizer", "train B, test A", B, A),
    ]
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    fig = summary_figure(ablate.read_table(tmp_path / "abl"))
    assert len(fig.axes[0].get_yticks()) == 4


def test_report_joins_executed_notebooks(tmp_path):
    from maskdet.report import write_report

    for i, name in enumerate(("01_a", "02_b")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_markdown_cell(f"# Chapter {i}\n\ntext {i}"),
            nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                "print('hi')",
                outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text=f"output of chapter {i}\n")
                ],
            ),
        ]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    out = write_report(tmp_path, tmp_path / "report.html")
    text = out.read_text()
    assert "Chapter 0" in text and "Chapter 1" in text and "output of chapter 1" in text
    assert text.index("Chapter 0") < text.index("Chapter 1")
    assert "X = 1" not in text and "print(&#39;hi&#39;)" not in text and "print('hi')" not in text
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "none", tmp_path / "r.html")
    json.dumps({"ok": True})


def test_synthesis_arms_add_each_lever_alone():
    from maskdet.synthesis.appearance import Look

    mtf = ablate.synthesis_arms("masktheface")
    before = next(iter(mtf.values()))
    assert before == {"backend": "masktheface", "look": "legacy", "hard_negatives": 0.0}
    for variant, settings in list(mtf.items())[1:-1]:  # one change against "before"
        changed = {k for k in settings if settings[k] != before[k]}
        assert len(changed) == 1, variant
        look = Look.parse(settings["look"])
        assert sum([look.palette == "real", look.shading, look.loops, look.jitter]) <= 1
    assert mtf["all together"] == {"backend": "mixed", "look": "real", "hard_negatives": 0.3}
    builtin = ablate.synthesis_arms("builtin")
    assert "+ both synthesizers mixed" not in builtin
    assert (
        builtin["all together"]["backend"] == "builtin"
        and mtf["all together"]["backend"] == "mixed"
    )


@pytest.mark.slow
def test_synthesis_ablation_reports_real_auc(tmp_path, masked_mini, real_small):
    rows = ablate.run_ablations(
        str(masked_mini),
        str(tmp_path / "abl"),
        "smoke",
        experiments=("synthesis",),
        seeds=[0],
        workers=0,
        device="cpu",
        real_dir=str(real_small),
    )
    arms = [r for r in rows if r["experiment"] == "synthesis"]
    assert len(arms) == len(ablate.synthesis_arms("builtin"))
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    for r in rows:
        assert 0.0 <= r["real_auc_low"] <= r["real_auc"] <= r["real_auc_high"] <= 1.0
        assert 0.0 <= r["real_auc_tight"] <= 1 and 0.0 <= r["real_auc_loose"] <= 1
    hard = next(r for r in arms if r["variant"] == "+ hard negatives")
    made = json.loads(
        (tmp_path / "abl" / "data_synthesis___hard_negatives" / "synthesis.json").read_text()
    )
    assert (
        made["settings"]["hard_negatives"] == 0.3
        and made["summary"]["hard_negatives"]["written"] > 0
    )
    assert [r for r in read_manifest(hard["train_data"]) if r["occluder"]]
    saved = ablate.read_table(tmp_path / "abl")
    means = [s["real_auc_mean"] for s in saved["summary"]]
    assert means == sorted(means, reverse=True)  # the table is read by real AUC
