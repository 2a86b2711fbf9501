"""Stage 01 on real LFW faces: identity split, framing, and every kind of bad input."""

from __future__ import annotations

import io
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskdet.core.constants import FACE_SIZE, SPLITS
from maskdet.core.imageio import BadImage, read_rgb
from maskdet.core.manifest import COLUMNS, read_manifest, usable
from maskdet.faces import data


def lfw_faces(archive: Path, n: int) -> list[tuple[str, bytes]]:
    """The first ``n`` real JPEGs of the archive as (member name, bytes)."""
    out = []
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".jpg"):
                out.append((m.name, tf.extractfile(m).read()))
                if len(out) == n:
                    break
    return out


def test_split_is_identity_disjoint_stable_and_seeded():
    people = [f"person_{i}" for i in range(200)]
    a = data.split_identities(people, seed=0)
    assert a == data.split_identities(
        list(reversed(people)), seed=0
    )  # order of input is irrelevant
    counts = {s: sum(v == s for v in a.values()) for s in SPLITS}
    assert counts == {"train": 160, "val": 20, "test": 20}
    b = data.split_identities(people, seed=1)
    assert a != b and sorted(a) == sorted(b)
    small = data.split_identities(people[:3], seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]
    limited = data.split_identities(people, seed=0, limit=50)
    assert len(limited) == 50


def test_stage01_on_lfw_mini(mini_data):
    rows = read_manifest(mini_data)
    assert len(rows) == 300 and all(set(COLUMNS) <= set(r) for r in rows)
    data.check_identity_disjoint(rows)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["identity"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values()) and len(splits_of) == 150
    n_people = {s: len({r["identity"] for r in rows if r["split"] == s}) for s in SPLITS}
    assert n_people == {"train": 120, "val": 15, "test": 15}
    for r in usable(rows)[:40]:
        im = Image.open(mini_data / r["path"])
        assert im.format == "PNG" and im.size == (FACE_SIZE, FACE_SIZE) and im.mode == "RGB"
        assert r["path"].startswith(f"{r['split']}/not_wearing_mask/")


def test_rerun_gives_the_same_files(tmp_path, lfw_mini):
    a, b = tmp_path / "a", tmp_path / "b"
    data.download_and_prepare(str(lfw_mini), a, limit_identities=12, progress=False, workers=1)
    data.download_and_prepare(str(lfw_mini), b, limit_identities=12, progress=False, workers=2)
    data.download_and_prepare(str(lfw_mini), b, limit_identities=12, progress=False, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png")) and files_a
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()


def test_crop_holds_the_face_detected_by_dlib(mini_data):
    import dlib

    detector = dlib.get_frontal_face_detector()
    rows = usable(read_manifest(mini_data))[:30]
    inside = 0
    for r in rows:
        rgb = np.asarray(Image.open(mini_data / r["path"]))
        dets = detector(rgb, 1)
        if not dets:
            continue
        d = max(dets, key=lambda d: d.area())
        m = (FACE_SIZE - 112) / 2  # the loader's centre crop
        inside += d.left() >= m - 4 and d.top() >= m - 4 and d.right() <= FACE_SIZE - m + 4
    assert inside >= 0.9 * len(rows)


def make_bad_folder(root: Path, faces: list[tuple[str, bytes]]) -> dict[str, str]:
    """A folder of awkward inputs built from real faces; returns file -> expected outcome."""
    person = root / "Some_Person"
    person.mkdir(parents=True)
    rgb = np.asarray(Image.open(io.BytesIO(faces[0][1])).convert("RGB"))
    expected = {}

    def save(name, fn, outcome):
        fn(person / name)
        expected[name] = outcome

    save("good.jpg", lambda p: p.write_bytes(faces[1][1]), "ok")
    save("corrupt.jpg", lambda p: p.write_bytes(faces[2][1][: len(faces[2][1]) // 3]), "skipped")
    save("zero.jpg", lambda p: p.write_bytes(b""), "skipped")
    save("notes.jpg", lambda p: p.write_text("this is not an image"), "skipped")
    save("cmyk.jpg", lambda p: Image.fromarray(rgb).convert("CMYK").save(p), "ok")
    save("gray.jpg", lambda p: Image.fromarray(rgb).convert("L").save(p), "ok")
    save("alpha.png", lambda p: Image.fromarray(rgb).convert("RGBA").save(p), "ok")
    save("deep16.png", lambda p: Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(p), "ok")
    save("tiny.jpg", lambda p: Image.fromarray(rgb).resize((16, 16)).save(p), "skipped")
    save("huge.jpg", lambda p: Image.fromarray(rgb).resize((6000, 6000)).save(p, quality=70), "ok")

    def exif_rotated(p):
        im = Image.fromarray(np.ascontiguousarray(np.rot90(rgb)))  # stored sideways ...
        exif = Image.Exif()
        exif[0x0112] = 6  # ... with the EXIF tag that says "rotate 90 degrees clockwise to view"
        im.save(p, exif=exif)

    save("exif_rotated.jpg", exif_rotated, "ok")
    save("name.with.several.dots.jpeg", lambda p: p.write_bytes(faces[3][1]), "ok")
    save("späce and ünïcode.JPG", lambda p: p.write_bytes(faces[4][1]), "ok")
    (person / "README.txt").write_text("not an image name: ignored and counted")
    return expected


def test_bad_inputs_are_recorded_not_fatal(tmp_path, lfw_mini):
    faces = lfw_faces(lfw_mini, 5)
    expected = make_bad_folder(tmp_path / "in", faces)
    out = tmp_path / "out"
    result = data.prepare(tmp_path / "in", out, progress=False, workers=2)
    rows = read_manifest(out)
    by_file = {r["source"].rsplit("/", 1)[1]: r for r in rows}
    assert set(by_file) == set(expected)  # every input image accounted for
    for name, outcome in expected.items():
        assert by_file[name]["status"] == outcome, (name, by_file[name])
        if outcome == "skipped":
            assert by_file[name]["reason"] and by_file[name]["path"] == ""
        else:
            im = Image.open(out / by_file[name]["path"])
            assert im.size == (128, 128) and im.mode == "RGB"
    assert result["images_in"] == len(expected) == result["written"] + result["skipped"]
    assert result["not_images_ignored"] == 1
    assert "too small" in by_file["tiny.jpg"]["reason"] and "empty" in by_file["zero.jpg"]["reason"]
    assert by_file["notes.jpg"]["reason"] == "not an image"
    # EXIF orientation applied: the stored crop matches the upright image, not the sideways one
    upright = data.crop_aligned(
        rgb := np.asarray(Image.open(io.BytesIO(faces[0][1])).convert("RGB"))
    )
    sideways = data.crop_aligned(np.ascontiguousarray(np.rot90(rgb)))
    got = np.asarray(Image.open(out / by_file["exif_rotated.jpg"]["path"])).astype(int)
    assert np.abs(got - upright).mean() < np.abs(got - sideways.astype(int)).mean() / 3
    names = [r["path"] for r in rows if r["path"]]
    assert len(names) == len(set(names)) and all(" " not in n for n in names)


def test_read_rgb_reasons(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="empty"):
        read_rgb(tmp_path / "z.jpg")
    with pytest.raises(BadImage, match="unreadable"):
        read_rgb(tmp_path / "missing.jpg")


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a known source"):
        data.download_and_prepare(str(tmp_path / "nope.tgz"), tmp_path / "out", progress=False)
