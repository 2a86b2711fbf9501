"""Issue 18's levers on real lfw-mini faces (no mocks): the opt-in train augmentations (pose,
framing, no colour shortcut) keep the label, keep every crop inside the image and are
deterministic under a seed; the builtin renderer's opt-in looks (``+skin``: masks near the face's
own skin tone, ``+prints``: patterned and printed cloth) keep stage 02's guarantees: twins
identical outside the mask pixel-wise, the same bytes for 1 and 2 workers, every input in the
manifest, all twins of a face in one split."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch

from maskdet.core.constants import IMAGE_SIZE
from maskdet.core.imageio import read_rgb
from maskdet.core.manifest import read_manifest
from maskdet.loading.augment import BatchAugment, denormalize, train_transform
from maskdet.loading.augment_presets import AUGMENT_PRESETS, LEVERS, AugmentConfig
from maskdet.loading.augment_warps import corners_in_input, face_in_view, pixel_homography
from maskdet.loading.cache import build_cache
from maskdet.loading.loader import loader_items, make_loaders
from maskdet.synthesis.appearance import PALETTE, Look, luminance
from maskdet.synthesis.landmarks import FaceFinder
from maskdet.synthesis.masking import CORE_POINTS
from maskdet.synthesis.masks import PRINTS, _pattern

from .synth_helpers import check_geometry, check_manifest, check_no_halo, run_copy, tree_bytes

GEOMETRIC = [f"default+{k}" for k in ("rotate", "yaw", "perspective", "box")] + ["levers"]
LOOK = "real,+skin,+prints"


def _draw(preset: str | AugmentConfig, n: int, seed: int = 0) -> dict:
    return BatchAugment(preset).sample(n, torch.Generator().manual_seed(seed))


def _warp(p: dict) -> np.ndarray:
    """The drawn crops as homographies (B, 3, 3): the levers' ``warp``, else ``theta``."""
    if "warp" in p:
        return p["warp"].double().numpy()
    theta = p["theta"].double().numpy()
    return np.concatenate([theta, np.tile([[[0.0, 0.0, 1.0]]], (len(theta), 1, 1))], 1)


# ----------------------------------------------------------------------------- augmentations


def test_levers_are_opt_in_and_leave_the_default_draws_alone():
    assert not AUGMENT_PRESETS["default"].extra_draws
    assert "warp" not in _draw("default", 8)
    base = _draw("default", 64, seed=3)
    for name in LEVERS:
        lever = _draw(f"default+{name}", 64, seed=3)
        changed = {"grey": {"colour"}, "hue": {"colour"}, "rotate": {"theta"}}.get(name, set())
        for key, value in base.items():
            if key not in changed and torch.is_tensor(value):
                assert torch.equal(value, lever[key]), (name, key)
        assert ("warp" in lever) == AUGMENT_PRESETS[f"default+{name}"].projective


INSIDE = ["default+inside", "default+box"]


@pytest.mark.parametrize("preset", INSIDE)
def test_inside_keeps_every_crop_inside_the_image(preset):
    cfg = replace(AUGMENT_PRESETS[preset], inside=True)
    corners = corners_in_input(_draw(cfg, 2000)["warp"].double().numpy())
    assert np.isfinite(corners).all() and np.abs(corners).max() <= 1 + 1e-5
    assert np.abs(corners).max() > 0.95  # shrunk only as far as needed, not to a safe tiny crop


def test_without_inside_the_same_warps_leave_the_image():
    """The check above can fail: the same pose and keystone draws, not shrunk, read outside."""
    corners = corners_in_input(_draw("levers", 2000)["warp"].double().numpy())
    assert (np.abs(corners) > 1.01).any(axis=(1, 2)).mean() > 0.2


@pytest.mark.parametrize("preset", GEOMETRIC + INSIDE[:1])
def test_geometric_levers_keep_the_face_region_in_view_and_stay_augmented(preset):
    warp = _draw(preset, 3000)["warp"].double().numpy()
    assert face_in_view(warp).all()
    val_view = np.abs(warp[:, 0, 1]) + np.abs(warp[:, 2, :2]).sum(1) < 1e-6
    assert val_view.mean() < 0.05  # the val-view fallback is rare: the augmentation stays on
    unkept = replace(AUGMENT_PRESETS[preset], keep_face=False, inside=False)
    assert not face_in_view(_warp(_draw(unkept, 3000))).all()
    assert not face_in_view(_warp(_draw("default", 3000))).all()  # today's crops cut it at times


@pytest.fixture(scope="module")
def twins(masked_mini):
    """(masked, unmasked) uint8 (N, 128, 128, 3) train twins and the unmasked faces' landmarks
    (HOG found, 128-pixel cache coordinates)."""
    cache = build_cache(masked_mini, "train", in_memory=True, workers=0)
    pair_of = {r["path"]: r["pair_id"] for r in read_manifest(masked_mini)}
    by_pair: dict = defaultdict(dict)
    for i, item in enumerate(cache.items):
        if cache.valid[i]:
            by_pair[pair_of[item.path]][item.label] = i
    finder, masked, plain, points = FaceFinder(), [], [], []
    for pair in by_pair.values():
        if len(pair) != 2:
            continue
        face = finder.find(cache.images[pair[0]])
        if face.box_source != "hog":
            continue
        masked.append(cache.images[pair[1]])
        plain.append(cache.images[pair[0]])
        points.append(face.landmarks[CORE_POINTS].astype(np.float64))
    assert len(masked) >= 8
    return np.stack(masked), np.stack(plain), np.stack(points)


def _to_output(warp: np.ndarray, pts: np.ndarray, w_in: int) -> np.ndarray:
    """Input pixel points (B, K, 2) where the augmented output (pixels) shows them."""
    fwd = np.linalg.inv(pixel_homography(warp, w_in, IMAGE_SIZE))
    h = np.concatenate([pts, np.ones(pts.shape[:2] + (1,))], 2) @ fwd.transpose(0, 2, 1)
    return h[..., :2] / h[..., 2:]


def test_levers_keep_the_label_nose_and_mouth_stay_in_view_and_masked(twins):
    """Every draw keeps the nose tip and mouth (the mask's evidence) in the 112-pixel view, and
    the masked twin, augmented with the same parameters, still differs from the unmasked one
    there far more than at the top of the view (where the twins are the same pixels)."""
    masked, plain, points = twins
    n, reps = len(masked), 6
    aug = BatchAugment("levers", backend="cv2")
    for rep in range(reps):
        p = aug.sample(n, torch.Generator().manual_seed(rep))
        seen = _to_output(p["warp"].double().numpy(), points, masked.shape[2])
        assert ((seen >= 0) & (seen <= IMAGE_SIZE - 1)).all(), rep
        a = denormalize(aug.apply_cv2(list(masked), p)).numpy()
        b = denormalize(aug.apply_cv2(list(plain), p)).numpy()
        diff = np.abs(a - b).sum(1)  # (N, 112, 112)
        xy = np.round(seen).astype(int)
        at_mask = np.mean([diff[i, xy[i, :, 1], xy[i, :, 0]].mean() for i in range(n)])
        at_top = diff[:, :8].mean()
        assert at_mask > 4 * at_top + 0.05, (rep, at_mask, at_top)


@pytest.mark.parametrize("mode", ["cached", "dataloader"])
def test_levers_in_both_loaders_keep_labels_and_repeat_under_a_seed(masked_mini, mode):
    def epoch(seed: int):
        torch.manual_seed(seed)  # the per-image path draws from torch's global RNG
        loader = make_loaders(
            masked_mini, 8, mode, "levers", workers=0, seed=seed, splits=("train",)
        )["train"]
        items = loader_items(loader)
        xs, ok = [], True
        for batch in loader:
            xs.append(batch.images)
            labels = ["/wearing_mask/" in items[i].path for i in batch.indices.tolist()]
            ok &= labels == [bool(v) for v in batch.labels.tolist()]
        return torch.cat(xs), ok

    a, ok = epoch(0)
    b, _ = epoch(0)
    c, _ = epoch(1)
    assert ok and a.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lever_kernels_agree_and_repeat(twins):
    masked, plain, _ = twins
    images = np.concatenate([masked, plain])
    aug = BatchAugment("levers")
    p = aug.sample(len(images), torch.Generator().manual_seed(5))
    again = aug.sample(len(images), torch.Generator().manual_seed(5))
    assert all(torch.equal(v, again[k]) for k, v in p.items() if torch.is_tensor(v))
    one, two = aug.apply_cv2(list(images), p, threads=1), aug.apply_cv2(list(images), p, threads=2)
    assert torch.equal(one, two)
    u8 = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert (aug._apply_torch(u8, p) - one).abs().mean() < 0.08  # the same warp in both kernels


def test_grey_lever_draws_grey_images_at_its_rate(twins):
    masked, plain, _ = twins
    images = list(np.concatenate([masked, plain] * 8))
    cfg = replace(AUGMENT_PRESETS["default+grey"], jpeg_p=0.0)  # JPEG's chroma rounding aside

    def is_grey(c: AugmentConfig) -> np.ndarray:
        aug = BatchAugment(c, backend="cv2")
        out = aug(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.Generator())
        rgb = denormalize(out).numpy() * 255
        return (rgb.max(1) - rgb.min(1)).max((1, 2)) < 1.5  # per image: channels equal

    drawn, before = is_grey(cfg), is_grey(replace(cfg, grey_p=0.0))
    assert (drawn | ~before).all()  # a grey photo stays grey
    assert 0.1 < drawn.mean() - before.mean() < 0.3  # grey_p = 0.2 of the colour photos


def test_per_image_transform_applies_the_levers():
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    img = torch.from_numpy(rgb).permute(2, 0, 1)
    tf = train_transform("levers")
    torch.manual_seed(0)
    a = tf(img)
    torch.manual_seed(0)
    assert a.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and torch.equal(a, tf(img))
    assert not torch.equal(a, tf(img))


# ----------------------------------------------------------------------------- renderer looks


def test_look_extras_parse_and_name():
    assert not Look().skin and not Look().prints and Look().name == "real"
    look = Look.parse(LOOK)
    assert look.skin and look.prints and look.loops and look.name == LOOK
    assert Look.parse("legacy,+prints").name == "legacy,+prints"
    assert Look.parse(Look.parse("real,-loops,+skin").name) == Look.parse("real,+skin,-loops")
    with pytest.raises(ValueError, match="unknown look"):
        Look.parse("real,+glitter")


@pytest.mark.parametrize("kind", sorted(PRINTS))
def test_print_textures_use_both_colours_and_repeat(kind):
    v, u = np.mgrid[0:96, -48:48].astype(np.float32) / 96  # face widths, as the renderer's
    v = v + 0.35
    c0, c1 = np.array([30.0, 60, 140], np.float32), np.array([240.0, 235, 220], np.float32)
    a = _pattern(kind, u, v, c0, c1, np.random.default_rng(1))
    b = _pattern(kind, u, v, c0, c1, np.random.default_rng(1))
    assert a.shape == u.shape + (3,) and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 255
    near_c1 = (np.abs(a - c1).sum(2) < 40).mean()
    assert 0.01 < near_c1 < 0.9, near_c1  # a pattern, not a plain field of either colour


@pytest.fixture(scope="module")
def look_runs(small_faces, tmp_path_factory):
    base = tmp_path_factory.mktemp("levers")
    kw = dict(backend="builtin", look=LOOK, hard_negatives=0.3)
    return (
        run_copy(small_faces, base / "w1", workers=1, **kw),
        run_copy(small_faces, base / "w2", workers=2, **kw),
    )


def test_skin_and_prints_keep_stage_two_guarantees(look_runs):
    (data, summary), (data2, summary2) = look_runs
    assert summary["look"] == LOOK
    check_manifest(data, summary, "builtin")  # every input accounted for
    assert summary["masked"] >= 0.9 * summary["images_in"]
    assert check_geometry(data, "builtin", look=LOOK) > 20  # identical outside, pixel-wise
    assert tree_bytes(data) == tree_bytes(data2)  # 1 and 2 workers
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        k: v for k, v in summary2.items() if k != "seconds"
    }
    splits: dict = defaultdict(set)
    for r in read_manifest(data):
        splits[r["pair_id"]].add(r["split"])
    assert splits and all(len(s) == 1 for s in splits.values())  # all twins in one split


def test_skin_and_prints_are_drawn(look_runs):
    (data, summary), _ = look_runs
    assert "skin" in summary["mask_color"]
    assert set(summary["mask_color"]) <= set(PALETTE) | {"skin"}
    textures = {r["mask_texture"].split("/")[0] for r in read_manifest(data) if r["mask_texture"]}
    assert len(textures & set(PRINTS)) >= 2, textures


def test_skin_masks_are_low_contrast(look_runs):
    """Skin-tone masks differ from the skin they cover by less than the palette's masks do."""
    (data, _), _ = look_runs
    rows = read_manifest(data)
    faces = {
        r["pair_id"]: r for r in rows if r["label"] == "not_wearing_mask" and not r["occluder"]
    }
    contrast: dict = defaultdict(list)
    for m in rows:
        if m["label"] != "wearing_mask" or m["status"] != "ok":
            continue
        a, b = read_rgb(data / m["path"]), read_rgb(data / faces[m["pair_id"]]["path"])
        inside = np.abs(a.astype(int) - b).sum(2) > 0
        gap = abs(float(luminance(a[inside]).mean()) - float(luminance(b[inside]).mean()))
        contrast[m["mask_color"] == "skin"].append(gap)
    assert len(contrast[True]) >= 3
    assert np.median(contrast[True]) < 0.6 * np.median(contrast[False])


def test_skin_and_prints_no_halo(small_faces):
    check_no_halo(small_faces, "builtin", look=LOOK)
