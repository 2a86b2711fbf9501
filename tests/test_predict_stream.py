"""``predict`` on real face crops: output checked before any work, rows streamed as faces are
classified (a killed run keeps them), batches equal one face at a time, an exit status when no
image was found, and crops without a face reported as such (issue 12, B.8 and B.10)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskdet.__main__ import main
from maskdet.core import inference
from maskdet.deploy import predict

from .conftest import ROOT, SHARED

REALDEV = SHARED / "realdev"


def crops(n: int) -> list[Path]:
    """``n`` real crops, half with a mask and half without."""
    return (
        sorted((REALDEV / "mask").glob("*.png"))[: n // 2]
        + sorted((REALDEV / "nomask").glob("*.png"))[: n - n // 2]
    )


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_out_is_checked_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    missing_model = tmp_path / "no_such_model.pt"  # loading it would be the first work
    for out in (blocker / "preds.csv", tmp_path):  # under a file; a folder
        rc = main(["predict", "--checkpoint", str(missing_model), "--out", str(out), str(REALDEV)])
        err = capsys.readouterr().err
        assert rc == 2 and f"cannot write --out {out}" in err, err
        assert len(err.strip().splitlines()) == 1


def test_rows_are_streamed_and_survive_kill_9(tmp_path, onnx_model):
    out = tmp_path / "preds.csv"
    part = tmp_path / ".preds.part.csv"  # rows go here until the run ends (issue 22)
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskdet", "predict", "--checkpoint", str(onnx_model)]
        + ["--out", str(out), str(REALDEV)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's maskdet
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180  # the first batch of 32 faces takes seconds
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and len(part.read_text().splitlines()) > 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "predict ended before the test could stop it"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()  # a killed run never takes the output's name ...
    rows = read_csv(part)  # ... and its rows are on disk, whole
    total = len(list((REALDEV / "mask").glob("*.png")) + list((REALDEV / "nomask").glob("*.png")))
    assert 8 <= len(rows) < total  # classified faces were on disk before the end
    assert part.read_text().endswith("\n")  # whole lines: each row flushed as it was written
    for r in rows:
        assert list(r) == predict.CSV_COLUMNS and r["status"] in ("ok", "no_face")
        assert 0.0 <= float(r["prob_mask"]) <= 1.0


def test_batches_give_the_rows_of_one_face_at_a_time(tmp_path, onnx_model, capsys):
    clf = inference.MaskClassifier(onnx_model)
    paths = crops(40)
    one = predict.predict_paths(clf, paths, batch_size=1)
    batched = predict.predict_paths(clf, paths, batch_size=32)
    assert [r["path"] for r in batched] == [str(p) for p in paths]  # input order
    for a, b in zip(one, batched):
        assert {k: v for k, v in a.items() if k != "prob_mask"} == {
            k: v for k, v in b.items() if k != "prob_mask"
        }
        assert abs(float(a["prob_mask"]) - float(b["prob_mask"])) <= 1e-5
    out = tmp_path / "p.csv"
    assert (
        main(
            ["predict", "--checkpoint", str(onnx_model), "--out", str(out)]
            + [str(p) for p in paths[:3]]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "\rpredict:   0%|" in err  # the text bar (maskdet.core.progress), cleared at the end
    assert re.search(r"\rpredict: 3 images in \d\d:\d\d\n$", err)  # then its final line
    assert len(read_csv(out)) == 3


def test_no_input_image_found_exits_non_zero(tmp_path, onnx_model, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    for inputs in ([str(tmp_path / "empty")], [str(tmp_path / "missing.jpg")]):
        out = tmp_path / "p.csv"
        rc = main(["predict", "--checkpoint", str(onnx_model), "--out", str(out)] + inputs)
        err = capsys.readouterr().err
        assert rc == 1 and "predict: no input image found" in err, err
    assert read_csv(out)[0]["status"] == "error"  # the missing file has its row and reason
    assert "No such file" in read_csv(out)[0]["error"]


def test_crop_without_a_face_is_reported_no_face(tmp_path, onnx_model):
    black = tmp_path / "black.png"
    Image.new("RGB", (6000, 6000)).save(black)  # 36 MP, within the measured decode limit
    face = crops(2)[1]
    rows = predict.predict_paths(inference.MaskClassifier(onnx_model), [black, face])
    assert [(r["status"], r["framing"]) for r in rows] == [("no_face", "as_is"), ("ok", "detected")]
    assert rows[0]["error"] == predict.NO_FACE_IN_CROP and rows[0]["left"] == ""
    assert all(0 <= float(r["prob_mask"]) <= 1 for r in rows)  # classified as it is, and said so
    assert np.isfinite(float(rows[1]["det_score"]))
