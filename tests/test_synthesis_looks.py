"""Stage 02's realism levers (issue 10) on real lfw-mini faces: the real-photo palette, light-
following shading, ear loops, size jitter, both synthesizers mixed, and hard negatives. Each keeps
the guarantees of stage 02: twins identical outside what was drawn, the same bytes for 1 and 2
workers, and every input accounted for in the manifest."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from maskdet.core.imageio import read_rgb
from maskdet.core.manifest import read_manifest
from maskdet.synthesis.appearance import PALETTE, Look, color_rgb, recolor
from maskdet.synthesis.landmarks import FaceFinder
from maskdet.synthesis.masking import rng_for
from maskdet.synthesis.occluders import KINDS, OccluderRenderer
from maskdet.synthesis.renderers import make_renderer
from maskdet.synthesis.synthesis import synthesize_dataset

from .synth_helpers import check_geometry, check_manifest, check_no_halo, run_copy, tree_bytes


def test_look_parse_names_and_errors():
    assert Look.parse(None) == Look() and Look().name == "real"
    legacy = Look.parse("legacy")
    assert (legacy.palette, legacy.shading, legacy.loops, legacy.jitter) == (
        "legacy",
        False,
        False,
        False,
    )
    assert Look.parse("real,-loops").name == "real,-loops"
    assert Look.parse(Look.parse("real,-shading,-jitter").name) == Look.parse(
        "real,-shading,-jitter"
    )
    with pytest.raises(ValueError, match="unknown look"):
        Look.parse("real,-sparkles")


def test_recolor_keeps_the_templates_folds():
    tmpl = np.full((40, 60, 3), 200, np.float32)
    tmpl[:, ::6] = 150  # pleats
    alpha = np.ones((40, 60), np.float32)
    for name in ("black", "light_blue", "white"):
        target = color_rgb(name)
        out = recolor(tmpl, alpha, target)
        assert out.shape == tmpl.shape and out.min() >= 0 and out.max() <= 255
        assert out[:, 0].mean() < out[:, 1].mean() - 3  # the pleat stays darker
        assert np.abs(out[:, 1:6].mean((0, 1)) - target).max() < 40  # the colour is the palette's


@pytest.fixture(scope="module")
def real_runs(small_faces, tmp_path_factory):
    base = tmp_path_factory.mktemp("looks")
    kw = dict(backend="builtin", look="real", hard_negatives=0.4)
    return (
        run_copy(small_faces, base / "w1", workers=1, **kw),
        run_copy(small_faces, base / "w2", workers=2, **kw),
    )


def test_real_look_manifest_twins_and_workers(real_runs):
    (data, summary), (data2, summary2) = real_runs
    check_manifest(data, summary, "builtin")
    assert summary["look"] == "real" and summary["masked"] >= 0.9 * summary["images_in"]
    assert check_geometry(data, "builtin") > 20  # identical outside the mask, pixel-wise
    assert tree_bytes(data) == tree_bytes(data2)
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        k: v for k, v in summary2.items() if k != "seconds"
    }


def test_real_look_colours_follow_the_palette(real_runs):
    (_, summary), _ = real_runs
    assert set(summary["mask_color"]) <= set(PALETTE)
    assert "gas" not in summary["mask_type"]


def test_hard_negatives_are_unmasked_recorded_and_identical_outside(real_runs, small_faces):
    (data, summary), _ = real_runs
    rows = read_manifest(data)
    negs = [r for r in rows if r["occluder"]]
    faces = {r["path"]: r for r in rows if r["label"] == "not_wearing_mask" and not r["occluder"]}
    hn = summary["hard_negatives"]
    assert hn["images_in"] == len(negs) > 0 and hn["written"] + hn["failed"] == hn["images_in"]
    assert sum(hn["kinds"].values()) == hn["written"]
    finder, renderer = FaceFinder(), OccluderRenderer()
    for r in negs:
        src = faces[r["source"]]
        assert r["label"] == "not_wearing_mask" and r["backend"] == "occluder"
        assert (r["split"], r["identity"], r["pair_id"]) == (
            src["split"],
            src["identity"],
            src["pair_id"],
        )
        assert r["occluder"].split("/")[0] in KINDS
        if r["status"] != "ok":
            assert r["reason"] and not r["path"]
            continue
        assert r["path"].endswith(".occ.png") and "/not_wearing_mask/" in r["path"]
        face_rgb, occluded = read_rgb(data / src["path"]), read_rgb(data / r["path"])
        out = renderer.render(face_rgb, finder.find(face_rgb), rng_for(0, "occ:" + r["pair_id"]))
        assert np.array_equal(out.rgb, occluded)
        outside = out.alpha == 0
        assert outside.mean() > 0.3 and np.array_equal(occluded[outside], face_rgb[outside])
    files = sorted(
        p.relative_to(data).as_posix() for p in data.glob("*/not_wearing_mask/*.occ.png")
    )
    assert files == sorted(r["path"] for r in negs if r["status"] == "ok")


def test_hard_negative_grid_shows_each_kind(real_runs):
    from maskdet.synthesis.figures import sample_grid

    (data, summary), _ = real_runs
    kinds = {r["occluder"] for r in read_manifest(data) if r["occluder"] and r["status"] == "ok"}
    fig = sample_grid(data, per_row=3, by="occluder", label="not_wearing_mask")
    assert len(fig.axes) == 3 * len(kinds) and kinds
    assert {a.get_title(loc="left").split(" (")[0] for a in fig.axes[::3]} == kinds


def test_rerun_without_hard_negatives_removes_them(real_runs, tmp_path):
    (data, _), _ = real_runs
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    synthesize_dataset(copy, backend="builtin", workers=1, progress=False)
    assert not list(copy.glob("*/not_wearing_mask/*.occ.png"))
    assert not [r for r in read_manifest(copy) if r["occluder"]]


def test_legacy_look_draws_no_loops_or_jitter(small_faces):
    finder = FaceFinder()
    legacy, real = make_renderer("builtin", look="legacy"), make_renderer("builtin", look="real")
    p = sorted(small_faces.glob("*/not_wearing_mask/*.png"))[0]
    rgb = read_rgb(p)
    face = finder.find(rgb)
    a = legacy.render(rgb, face, rng_for(0, "x")).alpha
    b = real.render(rgb, face, rng_for(0, "x")).alpha
    assert (b > 0).sum() != (a > 0).sum()


def test_real_look_no_halo(small_faces):
    check_no_halo(small_faces, "builtin")
