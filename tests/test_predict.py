"""Predictions, export and Grad-CAM with a real (briefly trained) model on real faces and photos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maskdet.core import inference
from maskdet.core.imageio import read_rgb
from maskdet.deploy import detect, gradcam, predict
from maskdet.deploy.export import export_model
from maskdet.loading.augment import eval_transform, to_tensor_uint8

from .conftest import QUALITATIVE

PHOTOS = [
    "masked_02.jpg",
    "masked_08.jpg",
    "masked_11.jpg",
    "masked_16.jpg",
    "masked_23.jpg",
    "unmasked_03.jpg",
    "unmasked_05.jpg",
    "unmasked_13.jpg",
]


@pytest.fixture(scope="session")
def detector() -> detect.FaceDetector:
    return detect.FaceDetector("mtcnn")


def test_predict_photos_row_per_face_and_bad_files_recorded(tmp_path, tiny_run, detector):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(QUALITATIVE / name, folder / ("sub" if name.startswith("un") else "") / name)
    (folder / "corrupt.jpg").write_bytes((QUALITATIVE / PHOTOS[0]).read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image: ignored when walking a folder")
    clf = inference.MaskClassifier(tiny_run / "best.pt")
    rows = predict.predict_paths(clf, [folder], photos=True, detector=detector)
    out = tmp_path / "preds.csv"
    counts = predict.write_rows(out, rows)
    assert (counts["rows"], counts["errors"]) == (len(rows), 2)
    with open(out, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == len(rows) and list(back[0]) == predict.CSV_COLUMNS
    by_file: dict[str, list[dict]] = {}
    for r in back:
        by_file.setdefault(Path(r["path"]).name, []).append(r)
    assert set(by_file) == set(PHOTOS) | {"corrupt.jpg", "empty.png"}
    for name in ("corrupt.jpg", "empty.png"):
        (r,) = by_file[name]
        assert r["status"] == "error" and r["error"] and r["prob_mask"] == ""
    assert "0 bytes" in by_file["empty.png"][0]["error"]
    total_faces = 0
    for name in PHOTOS:
        found = detector.detect(read_rgb(QUALITATIVE / name))
        got = by_file[name]
        if not found:
            assert [r["status"] for r in got] == ["no_face"]
            continue
        total_faces += len(found)
        assert [int(r["face"]) for r in got] == list(range(len(found)))
        for r, f in zip(got, found):
            assert r["status"] == "ok" and 0.0 <= float(r["prob_mask"]) <= 1.0
            assert r["label"] in ("wearing_mask", "not_wearing_mask")
            assert float(r["left"]) == pytest.approx(f.box[0], abs=0.05)
    assert total_faces >= 15  # masked_08 and masked_16 are crowds


def test_crop_framing_is_normalised(tiny_run, masked_mini, detector):
    """A stored LFW-like crop and a tight cut of the same face give nearly the same crop."""
    rows = [p for p in sorted((masked_mini / "train" / "not_wearing_mask").glob("*.png"))][:3]
    clf = inference.MaskClassifier(tiny_run / "best.pt")
    for path in rows:
        rgb = read_rgb(path)
        loose, face = predict.normalise_crop(rgb, detector)
        assert face is not None
        # the training framing maps a stored crop (almost) onto itself
        sq = detect.crop_square(
            face.box, detect.FRAMING["mtcnn"], face.landmarks, detect.EYE_FRAMING["mtcnn"]
        )
        assert detect.box_iou(sq, (0, 0, 128, 128)) > 0.8
        # a tight cut around the face box, upscaled, is re-framed like the stored crop
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        tight = rgb[max(y0, 0) : y1, max(x0, 0) : x1]
        tight = np.ascontiguousarray(np.repeat(np.repeat(tight, 2, 0), 2, 1))
        reframed, face2 = predict.normalise_crop(tight, detector)
        assert face2 is not None and reframed.shape == (128, 128, 3)
        centre = slice(32, 96)  # the face itself (borders of a tight cut are replicated)
        diff = np.abs(
            reframed[centre, centre].astype(int) - loose[centre, centre].astype(int)
        ).mean()
        assert diff < 25, diff
        p = clf.probs([loose, reframed])
        assert abs(p[0] - p[1]) < 0.25


def test_export_parity_onnx_and_torchscript(tmp_path, tiny_run, masked_mini):
    crops = [read_rgb(p) for p in sorted((masked_mini / "val").rglob("*.png"))[:8]]
    clf = inference.MaskClassifier(tiny_run / "best.pt")
    x = clf.preprocess(crops)
    res = export_model(tiny_run / "best.pt", tmp_path / "export", parity_images=x)
    assert set(res["parity_max_abs_diff"]) == {"onnx", "torchscript"}
    assert max(res["parity_max_abs_diff"].values()) <= 1e-4
    ref = clf.probs(crops)
    for name in ("model.onnx", "model.ts"):
        other = inference.MaskClassifier(tmp_path / "export" / name)
        assert other.threshold == pytest.approx(clf.threshold)
        np.testing.assert_allclose(other.probs(crops), ref, atol=1e-4)
        assert other.probs(crops[:1]).shape == (1,)  # batch 1 works (dynamic batch)


def test_preprocess_matches_val_loader(masked_mini):
    crops = [read_rgb(p) for p in sorted((masked_mini / "val").rglob("*.png"))[:4]]
    ours = inference.Preprocess()(crops)
    ref = torch.stack([eval_transform()(to_tensor_uint8(c)) for c in crops]).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_gradcam_maps_have_input_size_and_vary(tiny_run, masked_mini):
    clf = inference.MaskClassifier(tiny_run / "best.pt")
    crops = [read_rgb(p) for p in sorted((masked_mini / "val").rglob("*.png"))[:4]]
    x = torch.from_numpy(clf.preprocess(crops))
    with torch.no_grad():
        masked = (clf.model.eval()(x).reshape(-1) >= 0).numpy()
    for layer in ("layer3", "layer4"):
        cams = {t: gradcam.grad_cam(clf.model, x, t, layer=layer) for t in ("mask", "no_mask")}
        cams["predicted"] = gradcam.grad_cam(clf.model, x, "predicted", layer=layer)
        for c in cams.values():
            assert c.shape == (4, 112, 112) and np.isfinite(c).all()
            assert np.all(c >= 0) and np.all(c <= 1)
        for i in range(4):
            # the two classes' maps are the positive and negative parts of one weighted sum:
            # one of them may be empty (no evidence that way), never both, never constant
            assert max(cams["mask"][i].std(), cams["no_mask"][i].std()) > 1e-3, (layer, i)
            want = cams["mask" if masked[i] else "no_mask"][i]
            np.testing.assert_allclose(cams["predicted"][i], want, atol=1e-5)
    ov = gradcam.overlay(crops[0], cams["predicted"][0])
    assert ov.shape == crops[0].shape and ov.dtype == np.uint8
    with pytest.raises(ValueError):
        gradcam.grad_cam(clf.model, x, "cat")


def test_cli_entry_points(tmp_path, tiny_run, masked_mini, capsys):
    """The subcommands of ``python -m maskdet`` that predict, export and evaluate."""
    import json

    from maskdet.__main__ import main

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    main(
        [
            "predict",
            "--checkpoint",
            str(tiny_run / "best.pt"),
            "--out",
            str(out),
            "--photos",
            str(QUALITATIVE / "masked_11.jpg"),
            str(bad),
        ]
    )
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok", "error"] and "not an image" in rows[1]["error"]
    assert '"errors": 1' in capsys.readouterr().out
    main(
        [
            "export",
            "--checkpoint",
            str(tiny_run / "best.pt"),
            "--out",
            str(tmp_path / "ex"),
            "--format",
            "onnx",
            "--int8",
            str(masked_mini),
        ]
    )
    res = json.loads(capsys.readouterr().out)
    assert list(res["files"]) == ["onnx"] and res["parity_max_abs_diff"]["onnx"] <= 1e-4
    q = res["int8"]
    int8, fp32 = Path(q["file"]), tmp_path / "ex" / "model.onnx"
    assert int8.exists() and int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights
    assert q["test_faces"] > 0 and q["calibration_faces"] > 0
    crops = [read_rgb(p) for p in sorted((masked_mini / "test").rglob("*.png"))[:16]]
    pq = inference.MaskClassifier(int8).probs(crops)
    pf = inference.MaskClassifier(fp32).probs(crops)
    assert (
        0 < np.abs(pq - pf).max() <= q["max_abs_diff"] + 5e-5 + 1e-6
    )  # quantised, and measured (reported to 4 decimals)
    assert np.abs(pq - pf).mean() < 0.05 and q["label_agreement"] >= 0.9
    main(
        [
            "evaluate",
            "--run",
            str(tiny_run),
            "--split",
            "val",
            "--bootstrap",
            "50",
            "--wandb",
            "disabled",
        ]
    )
    r = json.loads(capsys.readouterr().out)
    assert r["split"] == "val" and (tiny_run / "eval_val.json").exists()
