"""Checks shared by the synthesis tests of both backends (real faces, real renderers)."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from maskdet.core.imageio import read_rgb
from maskdet.core.manifest import read_manifest
from maskdet.synthesis.landmarks import FaceFinder
from maskdet.synthesis.masking import CORE_POINTS, rng_for
from maskdet.synthesis.renderers import make_renderer
from maskdet.synthesis.synthesis import synthesize_dataset


def run_copy(src: Path, dest: Path, **kw) -> tuple[Path, dict]:
    shutil.copytree(src, dest)
    return dest, synthesize_dataset(dest, progress=False, **kw)


def tree_bytes(data: Path) -> dict[str, bytes]:
    return {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in sorted(data.rglob("*"))
        if p.is_file() and ("wearing_mask" in p.parts or p.name == "manifest.csv")
    }


def check_manifest(data: Path, summary: dict, backend: str) -> None:
    rows = read_manifest(data)
    masked = [r for r in rows if r["label"] == "wearing_mask"]
    faces = {r["pair_id"]: r for r in rows if r["label"] == "not_wearing_mask"}
    assert summary["images_in"] == len(masked) > 0
    assert summary["images_in"] == summary["masked"] + summary["failed"] + summary["dropped"]
    assert Counter(r["status"] for r in masked)["ok"] == summary["masked"]
    for m in masked:
        twin = faces[m["pair_id"]]
        assert (m["split"], m["identity"], m["source"]) == (
            twin["split"],
            twin["identity"],
            twin["path"],
        )
        assert m["backend"] == backend and m["box_source"] in ("hog", "fallback")
        if m["status"] == "ok":
            assert twin["status"] == "ok" and m["path"].startswith(f"{m['split']}/wearing_mask/")
            assert m["mask_type"] and m["mask_color"] and m["mask_texture"]
            a, b = read_rgb(data / m["path"]), read_rgb(data / twin["path"])
            assert a.shape == b.shape and (data / m["path"]).suffix == (data / twin["path"]).suffix
        else:
            assert m["reason"] and not m["path"] and twin["status"] == "excluded"
    used = [r for r in faces.values() if r["status"] == "ok"]
    assert len(used) == summary["masked"]
    files = sorted(p.relative_to(data).as_posix() for p in data.glob("*/wearing_mask/*.png"))
    assert files == sorted(m["path"] for m in masked if m["status"] == "ok")


def check_geometry(
    data: Path,
    backend: str,
    masktheface_dir: str | None = None,
    seed: int = 0,
    look: str | None = None,
) -> int:
    """Re-render every kept pair: same pixels as the file; the mask covers nose and mouth, stays
    below the eyes, and every pixel outside it equals the unmasked twin. Returns pairs checked."""
    finder, renderer = FaceFinder(), make_renderer(backend, masktheface_dir, look)
    rows = read_manifest(data)
    faces = {r["pair_id"]: r for r in rows if r["label"] == "not_wearing_mask"}
    n = 0
    for m in (r for r in rows if r["label"] == "wearing_mask" and r["status"] == "ok"):
        face_rgb = read_rgb(data / faces[m["pair_id"]]["path"])
        masked = read_rgb(data / m["path"])
        face = finder.find(face_rgb)
        out = renderer.render(face_rgb, face, rng_for(seed, m["pair_id"]))
        assert np.array_equal(out.rgb, masked), m["path"]
        assert out.mask_type == m["mask_type"] and out.mask_color == m["mask_color"]
        a, pts = out.alpha, face.landmarks
        h, w = a.shape
        for i in CORE_POINTS:  # nose tip, lips, mouth centre
            x, y = np.clip(pts[i], 0, [w - 1, h - 1])
            assert a[y, x] > 0.5, (m["path"], i)
        # nothing above the line through the eye centres
        le, re = pts[36:42].mean(0), pts[42:48].mean(0)
        ys, xs = np.nonzero(a > 0.5)
        line_y = le[1] + (xs - le[0]) * (re[1] - le[1]) / max(re[0] - le[0], 1e-6)
        assert (ys < line_y).sum() == 0, (m["path"], int((ys < line_y).sum()))
        outside = a == 0
        assert outside.mean() > 0.3
        assert np.array_equal(masked[outside], face_rgb[outside]), m["path"]
        assert not np.any((masked != face_rgb).any(2) & outside)
        n += 1
    return n


def check_no_halo(
    data: Path, backend: str, masktheface_dir: str | None = None, look: str | None = None
) -> None:
    """Edge pixels are a proper blend out = face*(1-a) + c*a: the implied mask colour c stays in
    0..255. Upstream's bitwise blend gives out = face + c (saturating), i.e. c > 255: a halo."""
    finder, renderer = FaceFinder(), make_renderer(backend, masktheface_dir, look)
    for p in sorted(data.glob("*/not_wearing_mask/*.png"))[:20]:
        rgb = read_rgb(p)
        out = renderer.render(rgb, finder.find(rgb), rng_for(0, p.stem))
        a = out.alpha[..., None].astype(np.float64)
        edge = (out.alpha > 0.1) & (out.alpha < 0.9)
        assert edge.any()
        implied = (out.rgb - rgb * (1 - a)) / np.maximum(a, 1e-6)
        slack = 0.6 / a + 1  # rounding of the 8-bit output
        assert np.all((implied <= 255 + slack) & (implied >= -slack) | ~edge[..., None]), p.name


def make_bad_inputs(folder: Path, face_files: list[Path]) -> dict[str, str]:
    """Awkward files made from real faces; returns name -> expected status."""
    folder.mkdir(parents=True)
    faces = [Image.open(f).convert("RGB") for f in face_files[:4]]
    big = faces[0].resize((250, 250), Image.BICUBIC)
    expect: dict[str, str] = {}

    def save(name: str, im: Image.Image, status: str, **kw) -> None:
        im.save(folder / name, **kw)
        expect[name] = status

    jpg = io.BytesIO()
    big.save(jpg, "JPEG", quality=90)
    (folder / "corrupt.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    expect["corrupt.jpg"] = "failed"
    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "failed"
    (folder / "notes.jpg").write_text("this is not an image\n")
    expect["notes.jpg"] = "failed"
    (folder / "readme.txt").write_text("not an image name\n")
    expect["readme.txt"] = "skipped"
    save("tiny.png", big.resize((16, 16)), "failed")
    save("cmyk.jpg", big.convert("CMYK"), "ok", format="JPEG", quality=92)
    save("gray.png", faces[1].convert("L"), "ok")
    rgba = faces[2].convert("RGBA")
    rgba.putalpha(255)
    save("rgba.png", rgba, "ok")
    g16 = np.asarray(faces[3].convert("L"), dtype=np.uint16) * 257
    save("sixteen.png", Image.fromarray(g16), "ok")
    save("huge.jpg", big.resize((6000, 6000), Image.BICUBIC), "ok", format="JPEG", quality=80)
    rotated = big.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif rotated.jpg", rotated, "ok", format="JPEG", quality=92, exif=exif.tobytes())
    save("several.dots.in.name.jpeg", faces[1], "ok", format="JPEG", quality=92)
    save("UPPER CASE.JPG", faces[2], "ok", format="JPEG", quality=92)
    save("ünïcødé 名前.png", faces[3], "ok")
    (folder / "sub").mkdir()
    save("sub/nested.v2.png", faces[0], "ok")
    return expect


def check_bad_inputs(folder: Path, out: Path, records: list[dict], expect: dict[str, str]) -> None:
    by_input = {r["input"]: r for r in records}
    assert set(by_input) == set(expect)  # one record per file, none lost
    for name, status in expect.items():
        r = by_input[name]
        # a valid face may be dropped by the quality check (recorded), never fail or vanish
        assert r["status"] == status or (status, r["status"]) == ("ok", "dropped"), (name, r)
        if r["status"] == "ok":
            assert (out / r["output"]).exists() and r["output"].endswith(".png")
            assert read_rgb(out / r["output"]).shape == read_rgb(folder / name).shape
        else:
            assert r["reason"] and not r["output"]
    assert sum(r["status"] == "ok" for r in records) >= sum(s == "ok" for s in expect.values()) - 2
    assert by_input["exif rotated.jpg"]["box_source"] == "hog"  # upright after EXIF transpose
    assert (out / "records.csv").exists()
