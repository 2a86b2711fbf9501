"""A probe of the command line with bad input, faults and misuse (issue 12, goal): every case
ends with a one-line error (exit 2 for misuse, 1 for a failure) or a recorded skip, never a
traceback, and every input image is accounted for. Real lfw-mini faces, real checkpoints,
damaged copies of real files; kill -9 and its rerun are in ``test_faults.py``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from maskdet.__main__ import main
from maskdet.core.manifest import read_manifest

from .conftest import LFW_MINI


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``python -m maskdet ARGV`` in this process: (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own usage errors
        rc = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return rc, out, err


def refused(argv: list[str], capsys, rc: int, *phrases: str) -> str:
    """``argv`` fails with status ``rc`` and one error line holding every phrase."""
    got, _, err = cli(argv, capsys)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert got == rc and len(lines) == 1, (got, err)
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def people(tree: Path, n: int) -> list[Path]:
    return sorted(tree.iterdir())[:n]


# ---------------------------------------------------------------- stage 01: download


def test_a_source_that_is_not_there_names_it_and_the_sources_known(tmp_path, capsys):
    refused(
        ["download", "--source", tmp_path / "nope", "--out", tmp_path / "o"],
        capsys,
        1,
        str(tmp_path / "nope"),
        "known source",
    )
    assert not (tmp_path / "o" / "manifest.csv").exists()


def test_an_empty_source_folder_names_the_layout_expected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    refused(
        ["download", "--source", tmp_path / "empty", "--out", tmp_path / "o"],
        capsys,
        1,
        "no images found",
        "one folder per person",
    )


def test_two_people_cannot_fill_three_splits(lfw_tree, tmp_path, capsys):
    for p in people(lfw_tree, 2):
        shutil.copytree(p, tmp_path / "two" / p.name)
    refused(
        ["download", "--source", tmp_path / "two", "--out", tmp_path / "o"],
        capsys,
        1,
        "2 identities",
        "at least 3 people",
    )


def test_a_truncated_archive_names_itself_and_a_whole_copy_then_works(tmp_path, capsys):
    archive = tmp_path / "lfw-mini.tgz"
    whole = LFW_MINI.read_bytes()
    archive.write_bytes(whole[: len(whole) // 3])
    args = ["download", "--source", archive, "--out", tmp_path / "o", "--cache-dir", tmp_path / "c"]
    refused(args, capsys, 1, str(archive), "damaged or incomplete", "delete it")
    archive.write_bytes(whole)  # the half-extracted folder is not taken for the archive
    rc, out, _ = cli([*args, "--limit-identities", "10"], capsys)
    assert rc == 0 and '"identities_used": 10' in out
    rows = read_manifest(tmp_path / "o")
    assert len({r["identity"] for r in rows}) == 10
    assert all((tmp_path / "o" / r["path"]).is_file() for r in rows if r["status"] == "ok")


def test_a_text_file_named_zip_is_not_taken_for_an_archive(tmp_path, capsys):
    (tmp_path / "faces.zip").write_text("not an archive\n")
    refused(
        ["download", "--source", tmp_path / "faces.zip", "--out", tmp_path / "o"],
        capsys,
        1,
        "is not a .tgz, .tar or .zip archive",
    )


def test_broken_files_in_the_source_are_recorded_one_by_one(lfw_tree, tmp_path, capsys):
    src = tmp_path / "src"
    for p in people(lfw_tree, 6):
        shutil.copytree(p, src / p.name)
    victim = sorted((src / people(lfw_tree, 1)[0].name).iterdir())[0]
    bad = {
        "empty.jpg": b"",
        "truncated.jpg": victim.read_bytes()[:300],
        "text.jpg": b"hello, I am not a JPEG\n",
        "photo.heic": b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64,
    }
    folder = src / people(lfw_tree, 1)[0].name
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (src / "notes.txt").write_text("a stray file\n")
    rc, out, _ = cli(["download", "--source", src, "--out", tmp_path / "o"], capsys)
    assert rc == 0
    rows = read_manifest(tmp_path / "o")
    images = [p for p in src.rglob("*") if p.is_file() and p.name != "notes.txt"]
    assert len(rows) == len(images)  # every image file has its row: written or skipped
    by_source = {Path(r["source"]).name: r for r in rows}
    for name in bad:
        assert by_source[name]["status"] == "skipped" and by_source[name]["reason"], name
    assert all((tmp_path / "o" / r["path"]).is_file() for r in rows if r["status"] == "ok")
    assert '"not_images_ignored": 1' in out  # the stray text file, counted, not an image


def test_an_output_that_is_a_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    refused(
        ["download", "--source", LFW_MINI, "--out", tmp_path / "afile"],
        capsys,
        2,  # refused before any work, as a bad option value (issue 22)
        str(tmp_path / "afile"),
    )
    assert (tmp_path / "afile").read_text() == "x"


def test_a_count_that_is_not_a_number_is_a_usage_error(tmp_path, capsys):
    refused(["download", "--limit-identities", "many"], capsys, 2, "whole number", "'many'")


# ---------------------------------------------------------------- stage 02: synthesize


def test_synthesis_without_stage_01_names_it_and_makes_no_folder(tmp_path, capsys):
    refused(
        ["synthesize", "--data", tmp_path / "nodata", "--backend", "builtin"],
        capsys,
        1,
        "run stage 01 first",
        "download --out",
    )
    assert not (tmp_path / "nodata").exists()


def _stage01_copy(small_faces: Path, dest: Path) -> Path:
    shutil.copytree(small_faces, dest, ignore=shutil.ignore_patterns("cache", ".maskdet.lock"))
    return dest


def test_a_manifest_with_other_columns_is_damaged_not_empty(small_faces, tmp_path, capsys):
    data = _stage01_copy(small_faces, tmp_path / "d")
    (data / "manifest.csv").write_text("what,ever\n1,2\n")
    refused(
        ["synthesize", "--data", data, "--backend", "builtin"],
        capsys,
        1,
        "manifest.csv is damaged",
        "no path, split",
        "download --out",
    )


def test_a_manifest_cut_short_is_damaged(small_faces, tmp_path, capsys):
    data = _stage01_copy(small_faces, tmp_path / "d")
    text = (data / "manifest.csv").read_text()
    (data / "manifest.csv").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    refused(
        ["train", "--data", data, "--out", tmp_path / "r", "--epochs", "1"],
        capsys,
        1,
        "manifest.csv is damaged",
        "cut short",
    )


def test_a_fraction_above_one_is_a_usage_error(small_faces, tmp_path, capsys):
    data = _stage01_copy(small_faces, tmp_path / "d")
    refused(["synthesize", "--data", data, "--hard-negatives", "1.5"], capsys, 2, "0..1", "1.5")
    assert not list(data.glob("*/wearing_mask"))


def test_missing_and_broken_faces_are_excluded_and_every_image_counted(
    small_faces, tmp_path, capsys
):
    data = _stage01_copy(small_faces, tmp_path / "d")
    faces = [r for r in read_manifest(data) if r["status"] == "ok"]
    (data / faces[0]["path"]).unlink()
    (data / faces[1]["path"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc, out, _ = cli(
        ["synthesize", "--data", data, "--backend", "builtin", "--workers", "1"], capsys
    )
    assert rc == 0
    rows = {
        (r["label"], r["source"] if r["label"] == "wearing_mask" else r["path"]): r
        for r in read_manifest(data)
    }
    for face in faces[:2]:
        assert rows[("not_wearing_mask", face["path"])]["status"] == "excluded"
        twin = rows[("wearing_mask", face["path"])]
        assert twin["status"] == "failed" and twin["reason"] and not twin["path"]
    twins = [r for r in read_manifest(data) if r["label"] == "wearing_mask"]
    assert len(twins) == len(faces)  # one twin row per face: made, failed or dropped


# ---------------------------------------------------------------- stage 04: train


def test_training_on_faces_without_masks_names_stage_02(small_faces, tmp_path, capsys):
    data = _stage01_copy(small_faces, tmp_path / "d")
    refused(
        ["train", "--data", data, "--out", tmp_path / "r", "--epochs", "1", "--no-pretrained"],
        capsys,
        1,
        "stage 02",
    )


@pytest.mark.parametrize(
    "option, value, phrase",
    [
        ("--batch-size", "0", "1 or more"),
        ("--lr", "-1", "lr must be above 0"),
        ("--arch", "resnet1000", "invalid choice"),
        ("--device", "tpu", "device"),
    ],
)
def test_bad_training_options_are_usage_errors(
    masked_mini, tmp_path, capsys, option, value, phrase
):
    argv = ["train", "--data", masked_mini, "--out", tmp_path / "r", option, value]
    refused(argv, capsys, 2, phrase)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_a_run_dir_that_is_a_file_is_one_line_naming_it(masked_mini, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    refused(
        ["train", "--data", masked_mini, "--out", tmp_path / "afile"],
        capsys,
        2,  # a usage error, as for every --out that cannot be the folder it must be
        str(tmp_path / "afile"),
    )


# ---------------------------------------------------------------- stages 05-06, export, run


def test_evaluating_a_run_that_has_no_model_names_stage_04(tmp_path, capsys):
    refused(["evaluate", "--run", tmp_path / "norun"], capsys, 1, "best.pt not found", "train")


def test_evaluating_on_a_real_set_that_is_not_there_names_it(real_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(real_checkpoint, run / "best.pt")
    refused(
        ["evaluate", "--run", run, "--real", tmp_path / "noreal"],
        capsys,
        1,
        str(tmp_path / "noreal"),
    )


def test_predicting_with_a_checkpoint_that_is_not_there(lfw_tree, tmp_path, capsys):
    refused(
        [
            "predict",
            "--checkpoint",
            tmp_path / "none.pt",
            people(lfw_tree, 1)[0],
            "--out",
            tmp_path / "p.csv",
        ],
        capsys,
        1,
        "no such checkpoint file",
    )


def test_predict_accounts_for_every_input_file(real_checkpoint, lfw_tree, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(people(lfw_tree, 1)[0], folder)
    good = sorted(folder.iterdir())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    out = tmp_path / "p.csv"
    rc, _, _ = cli(["predict", "--checkpoint", real_checkpoint, folder, "--out", out], capsys)
    assert rc == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    status = {Path(r["path"]).name: r for r in rows}
    assert set(status) == {p.name for p in folder.iterdir()}  # every file has a row
    for name in ("empty.jpg", "text.png"):
        assert status[name]["status"] not in ("ok", "no_face", "") and status[name]["error"]
    assert all(status[p.name]["status"] in ("ok", "no_face") for p in good)


def test_exporting_a_text_file_as_a_checkpoint(tmp_path, capsys):
    (tmp_path / "model.pt").write_text("this is not a checkpoint\n")
    refused(
        ["export", "--checkpoint", tmp_path / "model.pt", "--out", tmp_path / "x"],
        capsys,
        1,
        str(tmp_path / "model.pt"),
    )
    assert not list(tmp_path.rglob("model.onnx")) and not list(tmp_path.rglob("model.ts"))


def test_a_notebook_parameter_without_a_value_is_a_usage_error(capsys):
    refused(["run", "--param", "EPOCHS", "--stages", "99"], capsys, 2, "NAME=VALUE", "'EPOCHS'")


@pytest.mark.parametrize(
    "argv", [["frobnicate"], ["run", "--preset", "nope"], ["predict"], ["evaluate"]]
)
def test_unknown_commands_and_missing_arguments_exit_2(argv, capsys):
    rc, _, err = cli(argv, capsys)
    assert rc == 2 and "error:" in err
