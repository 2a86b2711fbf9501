"""Stage 01 on source trees as users have them (issue 12, B.1-B.3 and B.10): an output that
overlaps the source, names that clash, stray files beside the person folders, a folder of one
person, split folders, HEIC and JFIF files, a huge 16-bit PNG. Real LFW faces throughout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskdet.__main__ import main
from maskdet.core.imageio import BadImage, read_rgb
from maskdet.core.manifest import read_manifest
from maskdet.faces import data

from .conftest import ROOT


def people(tree: Path, n: int, min_images: int = 1) -> list[Path]:
    return [p for p in sorted(tree.iterdir()) if len(list(p.iterdir())) >= min_images][:n]


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_an_output_overlapping_the_source_is_refused_and_nothing_is_deleted(
    lfw_tree, tmp_path, capsys
):
    src = tmp_path / "S"
    for split, person in zip(("train", "val", "train"), people(lfw_tree, 3, 2)):
        shutil.copytree(person, src / split / person.name)
    before = files_under(src)
    for out in (src, src / "data", tmp_path):  # the source, inside it, around it
        rc = main(["download", "--source", str(src), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "overlap" in err and len(err.strip().splitlines()) == 1, (out, err)
        assert files_under(src) == before
    assert main(["download", "--source", str(src), "--out", str(tmp_path / "elsewhere")]) == 0
    assert files_under(src) == before


def test_every_output_name_is_unique_and_holds_its_own_face(lfw_tree, tmp_path):
    src = tmp_path / "in"
    for person in people(lfw_tree, 3):
        shutil.copytree(person, src / person.name)
    p = src / "Person_P"
    p.mkdir()
    faces = sorted(lfw_tree.glob("*/*.jpg"))[10:13]
    shutil.copyfile(faces[0], p / "x.jpg")
    shutil.copyfile(faces[1], p / "x-2.jpg")
    Image.open(faces[2]).save(p / "x.png")
    out = tmp_path / "out"
    data.prepare(src, out, progress=False, workers=1)
    rows = [r for r in read_manifest(out) if r["identity"] == "Person_P"]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert len({r["path"] for r in rows}) == 3 and len({r["pair_id"] for r in rows}) == 3
    for r in rows:
        stored = np.asarray(Image.open(out / r["path"]))
        source = src / r["source"].split("/", 1)[1]
        assert np.array_equal(stored, data.crop_aligned(read_rgb(source))), r


def test_stray_files_beside_the_person_folders_change_nothing(lfw_tree, tmp_path, lfw_mini):
    kaggle = tmp_path / "kaggle"  # Kaggle's LFW zip: CSVs beside a doubled top folder
    shutil.copytree(lfw_tree, kaggle / "lfw-deepfunneled" / "lfw-deepfunneled")
    for name in ("lfw_allnames.csv", "pairs.csv", "people.csv"):
        (kaggle / name).write_text("name,images\nAbel_Aguilar,1\n")
    (kaggle / "lfw-deepfunneled" / "lfw-deepfunneled" / "Thumbs.db").write_bytes(b"\0" * 64)
    a = data.prepare(kaggle, tmp_path / "a", progress=False, workers=1)
    b = data.download_and_prepare(str(lfw_mini), tmp_path / "b", progress=False, workers=1)
    assert a["identities_found"] == 150 and a["identities_per_split"] == b["identities_per_split"]
    assert a["per_split"] == b["per_split"] and a["layout"] == "one folder per person"
    assert a["not_images"] == {".csv": 3, ".db": 1} and a["not_images_ignored"] == 4
    assert (tmp_path / "a" / "manifest.csv").read_text() == (
        tmp_path / "b" / "manifest.csv"
    ).read_text()


def test_a_folder_of_one_person_is_refused_with_the_layout_expected(lfw_tree, capsys, tmp_path):
    person = people(lfw_tree, 1, 4)[0]
    rc = main(["download", "--source", str(person), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "1 identity" in err and "one folder per person" in err, err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_split_folders_are_looked_through_and_a_person_stays_one_identity(lfw_tree, tmp_path):
    src = tmp_path / "S"
    four = people(lfw_tree, 6, 4)
    for person in four:
        files = sorted(person.iterdir())
        for split, chunk in (("train", files[:2]), ("val", files[2:])):  # one person in both
            (src / split / person.name).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copyfile(f, src / split / person.name / f.name)
    res = data.prepare(src, tmp_path / "out", progress=False, workers=1)
    rows = read_manifest(tmp_path / "out")
    assert {r["identity"] for r in rows} == {p.name for p in four}
    data.check_identity_disjoint(rows)
    assert res["identities_per_split"] and len(rows) == 24


def test_jfif_is_read_and_heic_is_recorded_with_its_format(lfw_tree, tmp_path):
    src = tmp_path / "in"
    for person in people(lfw_tree, 3):
        shutil.copytree(person, src / person.name)
    jpg = sorted(lfw_tree.glob("*/*.jpg"))[20]
    (src / "Phone_User").mkdir()
    shutil.copyfile(jpg, src / "Phone_User" / "Phone_User_0001.jfif")
    heic = src / "Phone_User" / "Phone_User_0002.heic"  # an ISO-BMFF 'heic' brand header
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 2000)
    res = data.prepare(src, tmp_path / "out", progress=False, workers=1)
    by_name = {r["source"].rsplit("/", 1)[1]: r for r in read_manifest(tmp_path / "out")}
    assert by_name["Phone_User_0001.jfif"]["status"] == "ok"
    assert by_name["Phone_User_0002.heic"]["status"] == "skipped"
    assert "HEIC image" in by_name["Phone_User_0002.heic"]["reason"]
    assert any("HEIC" in reason for reason in res["skipped_reasons"]) and not res["not_images"]
    assert res["images_in"] == res["written"] + res["skipped"] == len(by_name)


MEASURE = """
import resource, sys
from maskdet.core.imageio import BadImage, read_rgb
try:
    read_rgb(sys.argv[1])
    print("decoded")
except BadImage as err:
    print("refused:", err)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_huge_16_bit_png_is_refused_from_its_header(tmp_path):
    path = tmp_path / "black16.png"
    Image.fromarray(np.zeros((8900, 8900), dtype=np.uint16)).save(path)
    assert path.stat().st_size < 1_000_000  # a small file ...
    with pytest.raises(BadImage, match="too large to decode"):
        read_rgb(path)
    baseline = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT / "README.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    status, peak_mb = run.stdout.splitlines()
    assert status.startswith("refused: too large to decode"), run.stdout + run.stderr
    # ... whose decode would take GBs: refused before decoding, the process grew by little
    assert int(peak_mb) - int(baseline.stdout.splitlines()[1]) < 150, (peak_mb, baseline.stdout)
