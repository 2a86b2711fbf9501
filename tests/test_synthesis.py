"""Stage 02 with the builtin backend on real lfw-mini faces (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maskdet.core.imageio import read_rgb
from maskdet.core.manifest import read_manifest
from maskdet.synthesis.figures import sample_grid
from maskdet.synthesis.landmarks import FALLBACK_BOX, FaceFinder, measure_fallback_box
from maskdet.synthesis.masking import mask_files, rng_for
from maskdet.synthesis.synthesis import synthesize_dataset

from .synth_helpers import (
    check_bad_inputs,
    check_geometry,
    check_manifest,
    check_no_halo,
    make_bad_inputs,
    run_copy,
    tree_bytes,
)


@pytest.fixture(scope="module")
def builtin_runs(small_faces, tmp_path_factory):
    base = tmp_path_factory.mktemp("builtin")
    one = run_copy(small_faces, base / "w1", backend="builtin", workers=1)
    two = run_copy(small_faces, base / "w2", backend="builtin", workers=2)
    return one, two


def test_manifest_complete(builtin_runs):
    (data, summary), _ = builtin_runs
    check_manifest(data, summary, "builtin")
    assert summary["masked"] >= 0.95 * summary["images_in"]
    assert len(summary["mask_type"]) >= 3  # several shapes in a few dozen faces


def test_mask_covers_nose_and_mouth_only(builtin_runs):
    (data, _), _ = builtin_runs
    assert check_geometry(data, "builtin") > 20


def test_same_bytes_for_one_and_two_workers(builtin_runs):
    (d1, s1), (d2, s2) = builtin_runs
    assert {k: v for k, v in s1.items() if k != "seconds"} == {
        k: v for k, v in s2.items() if k != "seconds"
    }
    assert tree_bytes(d1) == tree_bytes(d2)


def test_rerun_replaces_previous_output(small_faces, tmp_path):
    data, first = run_copy(small_faces, tmp_path / "d", backend="builtin", workers=1)
    before = tree_bytes(data)
    second = synthesize_dataset(data, backend="builtin", workers=1, seed=0, progress=False)
    assert tree_bytes(data) == before and second["images_in"] == first["images_in"]
    third = synthesize_dataset(data, backend="builtin", workers=1, seed=1, progress=False)
    rows = read_manifest(data)
    assert sum(r["label"] == "wearing_mask" for r in rows) == third["images_in"]  # no duplicates
    assert tree_bytes(data) != before  # another seed, other masks


def test_no_halo(small_faces):
    check_no_halo(small_faces, "builtin")


def test_rng_is_per_image():
    a = rng_for(0, "train/x").random(3)
    assert np.array_equal(a, rng_for(0, "train/x").random(3))
    assert not np.array_equal(a, rng_for(1, "train/x").random(3))


def test_face_nearest_centre_not_largest(small_faces):
    files = sorted(small_faces.glob("*/not_wearing_mask/*.png"))
    big = Image.open(files[0]).resize((220, 220), Image.BICUBIC)
    small = Image.open(files[1]).resize((150, 150), Image.BICUBIC)
    canvas = Image.new("RGB", (520, 400), (90, 90, 90))
    canvas.paste(big, (0, 0))  # large face in the corner
    canvas.paste(small, (185, 125))  # smaller face in the middle
    face = FaceFinder().find(np.asarray(canvas))
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert face.box_source == "hog" and abs(cx - 260) < 40 and abs(cy - 200) < 40


def test_fallback_box_when_no_face_found(small_faces):
    rgb = read_rgb(sorted(small_faces.glob("*/not_wearing_mask/*.png"))[0])
    sideways = np.ascontiguousarray(np.rot90(rgb))  # HOG's frontal detector finds no face
    finder = FaceFinder()
    assert finder.detect(sideways) is None
    face = finder.find(sideways)
    h, w = rgb.shape[:2]
    assert face.box_source == "fallback" and face.box == tuple(
        round(f * s) for f, s in zip(FALLBACK_BOX, (w, h, w, h))
    )
    assert face.landmarks.shape == (68, 2)


def test_fallback_box_matches_measurement(mini_data):
    images = [read_rgb(p) for p in sorted(mini_data.glob("*/not_wearing_mask/*.png"))]
    measured = measure_fallback_box(images)  # all 300 lfw-mini crops
    assert measured["detected"] >= 0.95 * len(images)
    assert np.allclose(measured["box"], FALLBACK_BOX, atol=0.03)


def test_bad_inputs_are_recorded_not_fatal(small_faces, tmp_path):
    faces = sorted(small_faces.glob("*/not_wearing_mask/*.png"))
    expect = make_bad_inputs(tmp_path / "in", faces)
    records = mask_files(
        tmp_path / "in", tmp_path / "out", backend="builtin", workers=2, progress=False
    )
    check_bad_inputs(tmp_path / "in", tmp_path / "out", records, expect)


def test_sample_grid(builtin_runs):
    (data, summary), _ = builtin_runs
    fig = sample_grid(data, per_row=4, by="mask_type")
    assert len(fig.axes) == 4 * len(summary["mask_type"])
    fig = sample_grid(data, per_row=4, by="mask_color")
    assert len(fig.axes) == 4 * len(summary["mask_color"])


def test_cached_detector_finds_the_same_faces(small_faces, tmp_path, monkeypatch):
    import dlib

    from maskdet.synthesis.landmarks import frontal_face_detector

    monkeypatch.setenv("MASKDET_CACHE", str(tmp_path / "cache"))
    first = frontal_face_detector()  # builds dlib's detector and writes the cached copy
    assert list((tmp_path / "cache").glob("*.svm"))
    cached = frontal_face_detector()  # loads the copy
    assert isinstance(cached, dlib.fhog_object_detector)
    builtin = dlib.get_frontal_face_detector()
    found = 0
    for p in sorted(small_faces.glob("*/not_wearing_mask/*.png")):
        rgb = read_rgb(p)
        for up in (0, 1):
            want = [(r.left(), r.top(), r.right(), r.bottom()) for r in builtin(rgb, up)]
            assert want == [(r.left(), r.top(), r.right(), r.bottom()) for r in cached(rgb, up)]
            assert want == [(r.left(), r.top(), r.right(), r.bottom()) for r in first(rgb, up)]
            found += len(want)
    assert found > 0


def test_damaged_detector_cache_is_rebuilt(tmp_path, monkeypatch):
    from maskdet.synthesis.landmarks import frontal_face_detector

    monkeypatch.setenv("MASKDET_CACHE", str(tmp_path))
    frontal_face_detector()
    (copy,) = tmp_path.glob("*.svm")
    copy.write_bytes(b"not a detector")
    assert frontal_face_detector() is not None
    assert copy.stat().st_size > 1000  # written again


def test_closed_form_fit_line_matches_polyfit():
    from masktheface_patch import fit_line

    rng = np.random.default_rng(0)
    image = np.zeros((1, 128, 3), np.uint8)
    for _ in range(200):
        x, y = list(rng.uniform(0, 128, 2)), list(rng.uniform(0, 128, 2))
        if rng.random() < 0.1:
            x[1] = x[0]  # vertical: upstream nudges x[0] by 0.1
        xr = list(x)
        if xr[0] == xr[1]:
            xr[0] += 0.1
        ref_x = np.linspace(0, 128, 50)
        ref_y = np.poly1d(np.polyfit(xr, y, 1))(ref_x)  # upstream's fit_line
        got = np.array(fit_line(x, y, image))
        np.testing.assert_allclose(got[:, 0], ref_x)
        np.testing.assert_allclose(got[:, 1], ref_y, rtol=1e-7, atol=1e-6)
