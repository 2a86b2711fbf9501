"""Stage 02 with upstream MaskTheFace through masktheface_patch (needs MASKTHEFACE_DIR)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from maskdet.core.manifest import read_manifest

from .synth_helpers import (
    check_bad_inputs,
    check_geometry,
    check_manifest,
    check_no_halo,
    make_bad_inputs,
    run_copy,
    tree_bytes,
)

MTF = os.environ.get("MASKTHEFACE_DIR", "")
pytestmark = [
    pytest.mark.masktheface,
    pytest.mark.skipif(
        not (MTF and (Path(MTF) / "mask_the_face.py").exists()),
        reason="needs an upstream MaskTheFace checkout: set MASKTHEFACE_DIR "
        "(colab_setup.sh clones it at caf4d6ca)",
    ),
]


@pytest.fixture(scope="module")
def mtf_runs(small_faces, tmp_path_factory):
    base = tmp_path_factory.mktemp("mtf")
    one = run_copy(small_faces, base / "w1", backend="masktheface", masktheface_dir=MTF, workers=1)
    two = run_copy(small_faces, base / "w2", backend="masktheface", masktheface_dir=MTF, workers=2)
    return one, two


def test_manifest_complete(mtf_runs):
    (data, summary), _ = mtf_runs
    check_manifest(data, summary, "masktheface")
    assert summary["masked"] >= 0.9 * summary["images_in"]


def test_real_mask_types_and_colours(mtf_runs):
    (data, _), _ = mtf_runs
    rows = [r for r in read_manifest(data) if r["label"] == "wearing_mask"]
    types = {r["mask_type"] for r in rows}
    assert types and not types & {"empty", "inpaint"} and len(types) >= 4
    colours = {r["mask_color"] for r in rows}
    assert "template" in colours and len(colours) >= 4  # not every mask tinted blue


def test_mask_covers_nose_and_mouth_only(mtf_runs):
    (data, _), _ = mtf_runs
    assert check_geometry(data, "masktheface", MTF) > 20


def test_same_bytes_for_one_and_two_workers(mtf_runs):
    (d1, _), (d2, _) = mtf_runs
    assert tree_bytes(d1) == tree_bytes(d2)


def test_no_halo(small_faces):
    check_no_halo(small_faces, "masktheface", MTF)


def test_cli_from_any_directory_with_bad_inputs(small_faces, tmp_path):
    faces = sorted(small_faces.glob("*/not_wearing_mask/*.png"))
    expect = make_bad_inputs(tmp_path / "in", faces)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    before = sorted(p.name for p in Path(MTF).iterdir())
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "masktheface_patch",
            "--masktheface-dir",
            MTF,
            "--workers",
            "2",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import csv

    with open(tmp_path / "out" / "records.csv", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    check_bad_inputs(tmp_path / "in", tmp_path / "out", records, expect)
    assert (
        sorted(p.name for p in Path(MTF).iterdir()) == before
    )  # nothing downloaded or written there
    assert not any(elsewhere.iterdir())


def test_preloaded_templates_render_the_same(small_faces):
    from maskdet.core.imageio import read_rgb
    from maskdet.synthesis.landmarks import FaceFinder
    from maskdet.synthesis.masking import rng_for
    from masktheface_patch import MaskTheFaceRenderer

    finder = FaceFinder()
    lazy, eager = MaskTheFaceRenderer(MTF), MaskTheFaceRenderer(MTF)
    eager.preload()
    assert len([k for k in eager._templates if k[1] == 0]) == len(eager.cfg)
    for p in sorted(small_faces.glob("*/not_wearing_mask/*.png"))[:12]:
        rgb = read_rgb(p)
        face = finder.find(rgb)
        a = lazy.render(rgb, face, rng_for(0, p.name))
        b = eager.render(rgb, face, rng_for(0, p.name))
        assert (a.rgb == b.rgb).all() and a.mask_type == b.mask_type


def test_mixed_backend_uses_both_and_stays_deterministic(small_faces, tmp_path):
    kw = dict(backend="mixed", masktheface_dir=MTF)
    d1, s1 = run_copy(small_faces, tmp_path / "w1", workers=1, **kw)
    d2, _ = run_copy(small_faces, tmp_path / "w2", workers=2, **kw)
    rows = [r for r in read_manifest(d1) if r["label"] == "wearing_mask" and r["status"] == "ok"]
    assert set(Counter(r["backend"] for r in rows)) == {"masktheface", "builtin"}
    assert tree_bytes(d1) == tree_bytes(d2)
    assert s1["masked"] >= 0.9 * s1["images_in"]
