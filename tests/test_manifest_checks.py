"""Every manifest column fed a range of bad values (issue 22): each is refused on read with one
line naming the file, the row (its line) and the column; free-text columns take any text and
read it back unchanged. The manifest is a real stage 01 one (lfw-mini)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from maskdet.core.manifest import COLUMNS, ManifestError, read_manifest

ROW = 3  # the row changed: its line in the file is ROW + 2 (the header is line 1)

BAD = {
    "path": [
        "/etc/passwd",
        "../escape.png",
        "train/not_wearing_mask/../../../x.png",
        "C:\\faces\\a.png",
        "train\\not_wearing_mask\\a.png",
        "./train/not_wearing_mask/a.png",
        "train//a.png",
        "train/not_wearing_mask",
        "val/not_wearing_mask/a.png",  # another split's folder
        "train/wearing_mask/a.png",  # a label contradicting its folder
        "train/not_wearing_mask/a\0.png",
        "",  # with status ok
    ],
    "split": ["", "training", "TRAIN", "test ", "../train"],
    "label": ["maybe", "", "1", "Wearing_Mask", "not_wearing_mask "],
    "status": ["", "OK", "done", "ok "],
    "identity": ["", "   "],
    "pair_id": ["", " "],
}
FREE = [c for c in COLUMNS if c not in BAD]
ODD_TEXT = ["", "a,b", 'say "hi"', "two\nlines", "José García", "caf\\xe9", "x" * 2000]


def rewrite(data_dir: Path, change) -> int:
    """Apply ``change`` to the row ROW of the manifest in file order (no sorting); returns the
    line that row starts on."""
    path = data_dir / "manifest.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    row = rows[ROW]
    row.update(split="train", label="not_wearing_mask", status="ok")  # a known, ok row
    row["path"] = f"train/not_wearing_mask/{Path(row['path'] or 'x.png').name}"
    change(row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return ROW + 2


@pytest.fixture
def manifest_copy(tmp_path, small_faces) -> Path:
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.csv").write_bytes((small_faces / "manifest.csv").read_bytes())
    return out


@pytest.mark.parametrize(
    "column,value", [(c, v) for c, values in BAD.items() for v in values], ids=repr
)
def test_a_bad_value_is_refused_naming_row_and_column(manifest_copy, column, value):
    line = rewrite(manifest_copy, lambda row: row.update({column: value}))
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest_copy)
    text = str(err.value)
    assert f"manifest.csv row {line}, column {column}:" in text, text
    assert "\n" not in text and "stage 01" in text


@pytest.mark.parametrize("column", FREE)
def test_free_text_columns_take_any_text_unchanged(manifest_copy, column):
    for value in ODD_TEXT:
        rewrite(manifest_copy, lambda row, v=value: row.update({column: v}))
        assert read_manifest(manifest_copy)[ROW][column] == value


def test_bytes_that_are_not_utf8_name_the_row(manifest_copy):
    path = manifest_copy / "manifest.csv"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:4] + [lines[4] + b"\xe9"] + lines[5:]))
    with pytest.raises(ManifestError, match="manifest.csv row 5: not UTF-8 text"):
        read_manifest(manifest_copy)


def test_a_row_cut_short_is_named(manifest_copy):
    path = manifest_copy / "manifest.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[6] = lines[6].split(",")[0]
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ManifestError, match="row 7 is cut short"):
        read_manifest(manifest_copy)


def test_the_manifest_of_a_real_run_passes(small_faces):
    assert read_manifest(small_faces)
