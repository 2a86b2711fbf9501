"""The evaluation sets Colab downloads (maskdet.evaluation.evalsets): the crop, the builds, and their
downloads from a real HTTP server on 127.0.0.1 (checksum mismatch, a dropped connection and
resume, a missing file, no source at all), made from real data of ../shared."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskdet.core import download as dl
from maskdet.core.real import read_real_set
from maskdet.evaluation import evalsets

from .conftest import REALDEV
from .evalset_helpers import photo_source, real_source, serve

MIRRORS = {"realdev": "MASKDET_REAL_MIRRORS", "photos": "MASKDET_PHOTOS_MIRRORS"}
BUILD = {"realdev": evalsets.build_realdev, "photos": evalsets.build_photos}


def test_crop_window_is_a_square_of_1_5x_the_box_moved_inside_the_photo():
    assert evalsets.crop_window((40, 40, 60, 80), (200, 200)) == (20, 30, 80, 90)
    assert evalsets.crop_window((0, 10, 40, 50), (200, 200)) == (0, 0, 60, 60)  # left/top edge
    assert evalsets.crop_window((170, 150, 200, 200), (200, 200)) == (125, 125, 200, 200)
    assert evalsets.crop_window((0, 0, 150, 100), (300, 120)) == (15, 0, 135, 120)  # capped


def test_index_lists_every_crop_of_realdev_once():
    rows = evalsets.read_index(dl.index_path("realdev"))
    assert len({r["path"] for r in rows}) == len(rows)
    with open(REALDEV / "labels.csv", newline="", encoding="utf-8") as fh:
        labelled = [r["path"] for r in csv.DictReader(fh)]
    with open(REALDEV / "worn" / "labels.csv", newline="", encoding="utf-8") as fh:
        worn = ["worn/" + r["path"] for r in csv.DictReader(fh)]
    assert [r["path"] for r in rows] == labelled + worn
    assert all(len(r["sha256"]) == 64 and int(r["bytes"]) > 0 for r in rows)
    photos = evalsets.read_index(dl.index_path("photos"))
    labels = {r["label"] for r in photos}
    assert {"wearing_mask", "not_wearing_mask"} <= labels and all(r["licence"] for r in photos)


@pytest.fixture()
def sources(tmp_path):
    """Both test sources under one folder, with their indexes."""
    root = tmp_path / "src"
    return root, {"realdev": real_source(root / "jol"), "photos": photo_source(root / "kaggle")}


def test_realdev_built_from_a_local_folder_gives_the_reference_crops(sources, tmp_path):
    root, index = sources
    info = evalsets.build_realdev(tmp_path / "rd", root / "jol", index["realdev"], progress=False)
    assert info["built"] == info["crops"] == info["identical_to_reference"] == 14
    assert info["missing"] == []
    for r in evalsets.read_index(index["realdev"]):
        got = np.asarray(Image.open(tmp_path / "rd" / r["path"]))
        assert np.array_equal(got, np.asarray(Image.open(REALDEV / r["path"]).convert("RGB")))
    real = read_real_set(tmp_path / "rd")
    assert real.counts() == {"wearing_mask": 6, "not_wearing_mask": 6, "skipped": 0}
    assert (tmp_path / "rd" / "worn" / "labels.csv").read_text().count("\n") == 3
    assert "none stated upstream" in (tmp_path / "rd" / "README.md").read_text()


def _serve(sources, monkeypatch, tmp_path, upstream_404: bool):
    root, index = sources
    base, handler, httpd = serve(root)
    monkeypatch.setenv(MIRRORS["realdev"], base + "jol/")
    monkeypatch.setenv(MIRRORS["photos"], base + "kaggle/")
    monkeypatch.setenv("MASKDET_CACHE", str(tmp_path / "cache"))
    if upstream_404:  # the rows' own URLs answer 404 (quicker than unreachable hosts)
        monkeypatch.setattr(dl, "DOWNLOADS", dict(dl.DOWNLOADS))
        for key in MIRRORS:
            dl.DOWNLOADS[key] = dl.Remote(**{**vars(dl.DOWNLOADS[key]), "urls": (base + "up/",)})
    return index, handler, httpd


@pytest.fixture()
def mirror(sources, monkeypatch, tmp_path):
    """The sources served over HTTP as the mirrors of the download table's rows, whose own
    URLs answer 404."""
    index, handler, httpd = _serve(sources, monkeypatch, tmp_path, upstream_404=True)
    yield index, handler
    httpd.shutdown()


@pytest.fixture()
def mirror_only(sources, monkeypatch, tmp_path):
    """The same, with the rows' real upstream URLs (not reachable from the tests' machine)."""
    index, handler, httpd = _serve(sources, monkeypatch, tmp_path, upstream_404=False)
    yield index, handler
    httpd.shutdown()


def _first_file(index: Path, kind: str) -> str:
    key = "photo" if kind == "realdev" else "path"
    return evalsets.read_index(index)[0][key]


def _prefix(kind: str) -> str:
    return "jol/" if kind == "realdev" else "kaggle/"


@pytest.mark.parametrize("kind", ["realdev", "photos"])
def test_downloaded_through_the_mirror(mirror_only, tmp_path, kind):
    index, handler = mirror_only
    info = BUILD[kind](tmp_path / "out", index=index[kind], progress=False, workers=2)
    assert info["missing"] == [] and info["built"] == len(evalsets.read_index(index[kind]))
    if kind == "realdev":
        assert info["identical_to_reference"] == info["built"]
    again = BUILD[kind](tmp_path / "out", index=index[kind], progress=False)  # from the cache
    assert again["built"] == info["built"]
    assert len(handler.log) == len({p for p, _ in handler.log})  # nothing fetched twice


@pytest.mark.parametrize("kind", ["realdev", "photos"])
def test_checksum_mismatch_is_refused_deleted_and_recorded(mirror, tmp_path, kind):
    index, handler = mirror
    bad = _first_file(index[kind], kind)
    handler.faults[_prefix(kind) + bad] = "corrupt"
    info = BUILD[kind](tmp_path / "out", index=index[kind], progress=False, workers=2)
    missing = info["missing"]
    assert missing and {m["photo"] for m in missing} == {bad}
    assert all("checksum mismatch" in m["reason"] and "\n" not in m["reason"] for m in missing)
    cached = tmp_path / "cache" / "downloads" / kind / bad
    assert not cached.exists() and not cached.with_name(cached.name + ".part").exists()
    assert info["built"] == len(evalsets.read_index(index[kind])) - len(missing)
    assert evalsets.read_index(tmp_path / "out" / "missing.csv") == missing


@pytest.mark.parametrize("kind", ["realdev", "photos"])
def test_dropped_connection_is_resumed_with_range(mirror, tmp_path, kind):
    index, handler = mirror
    key = "photo" if kind == "realdev" else "path"
    cut = max(evalsets.read_index(index[kind]), key=lambda r: int(r["bytes"]))[key]
    handler.faults[_prefix(kind) + cut] = "cut"  # the largest: half of it is written first
    info = BUILD[kind](tmp_path / "out", index=index[kind], progress=False, workers=2)
    assert info["missing"] == []
    tries = [rng for path, rng in handler.log if path == _prefix(kind) + cut]  # on the mirror
    assert len(tries) == 2 and tries[0] == "" and tries[1].startswith("bytes=")


@pytest.mark.parametrize("kind", ["realdev", "photos"])
def test_missing_file_is_recorded_and_the_rest_built(mirror, tmp_path, kind, capsys):
    index, handler = mirror
    rows = evalsets.read_index(index[kind])
    key = "photo" if kind == "realdev" else "path"
    gone = rows[-1][key]  # the last file: the first ones arrive before it is asked for
    handler.faults[_prefix(kind) + gone] = "missing"
    info = BUILD[kind](tmp_path / "out", index=index[kind], progress=False, workers=2)
    lost = [r for r in rows if r[key] == gone]
    assert [m["photo"] for m in info["missing"]] == [gone] * len(lost)
    assert all("404" in m["reason"] and "\n" not in m["reason"] for m in info["missing"])
    said = [line for line in capsys.readouterr().out.splitlines() if gone in line]
    assert len(said) == 1 and said[0].startswith(f"not built: {gone}: ") and "404" in said[0]
    assert info["built"] == len(rows) - len(lost)
    build = json.loads((tmp_path / "out" / evalsets.BUILD_FILE).read_text())
    assert build["missing"] == info["missing"]
    listed = (tmp_path / "out" / "labels.csv").read_text()
    name = "file" if kind == "photos" else "path"
    assert all(Path(r[name]).name not in listed for r in lost)


@pytest.mark.parametrize("kind", ["realdev", "photos"])
def test_no_source_at_all_is_one_line(monkeypatch, tmp_path, kind, sources):
    _, index = sources
    monkeypatch.setenv(MIRRORS[kind], "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("MASKDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dl, "DOWNLOADS", dict(dl.DOWNLOADS))
    dl.DOWNLOADS[kind] = dl.Remote(**{**vars(dl.DOWNLOADS[kind]), "urls": ()})
    with pytest.raises(dl.DownloadError) as err:
        BUILD[kind](tmp_path / "out", index=index[kind], progress=False)
    assert "\n" not in str(err.value) and MIRRORS[kind] in str(err.value)
    assert not (tmp_path / "out").exists()


def test_auto_without_shared_builds_then_reuses_then_says_when_unreachable(
    mirror, monkeypatch, tmp_path, capsys
):
    index, _ = mirror
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evalsets, "REALDEV_DIR", tmp_path / "no-shared" / "realdev")
    monkeypatch.setattr(dl, "index_path", lambda key: index[key])
    got = evalsets.real_dir("auto", use_drive=False, progress=False)
    assert got == evalsets.REAL_OUT and (tmp_path / got / "labels.csv").is_file()
    assert "pixel-identical" in capsys.readouterr().out
    monkeypatch.setenv(MIRRORS["realdev"], "http://127.0.0.1:9/")  # offline from now on
    assert evalsets.real_dir("auto", use_drive=False) == evalsets.REAL_OUT  # the build stays
    (tmp_path / got / evalsets.BUILD_FILE).unlink()  # not a build any more: refused, not replaced
    os.remove(tmp_path / got / "labels.csv")
    assert evalsets.real_dir("auto", use_drive=False, progress=False) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("no realdev set (") and "no real-mask numbers" in out[-1]
    assert evalsets.real_dir("../somewhere") == "../somewhere"  # a folder given stays


def test_photos_auto_prefers_the_shared_folder(capsys):
    assert evalsets.photos_dir("auto", use_drive=False) == str(evalsets.PHOTOS_DIR)
    assert "shared copy" in capsys.readouterr().out
    credits = evalsets.photo_credits(evalsets.PHOTOS_DIR)
    assert credits and {"file", "label"} <= set(credits[0])


def test_out_that_is_not_a_build_is_never_replaced(sources, tmp_path):
    root, index = sources
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own files")
    with pytest.raises(FileExistsError, match="not built by maskdet"):
        evalsets.build_photos(tmp_path / "mine", root / "kaggle", index["photos"], progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own files"
