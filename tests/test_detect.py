"""The face detectors on real photos and LFW: YuNet (the default) against MTCNN, and the crop
framing calibrated for it (``detect.FRAMING``)."""

from __future__ import annotations

import numpy as np
import pytest

from maskdet.core.imageio import read_rgb
from maskdet.deploy import detect, predict

from .conftest import QUALITATIVE


def test_yunet_finds_masked_faces_at_least_as_often_as_mtcnn_did():
    rows = detect.compare_detectors(QUALITATIVE, ["yunet"])
    masked = [r for r in rows if r["file"].startswith("masked")]
    unmasked = [r for r in rows if r["file"].startswith("unmasked")]
    assert len(masked) == 30 and len(unmasked) == 20 and not any(r["error"] for r in rows)
    # MTCNN as configured before YuNet: 48 boxes on the masked photos, 27 photos with a face
    assert sum(r["faces"] for r in masked) >= 48
    assert sum(r["faces"] > 0 for r in masked) >= 27
    assert all(r["faces"] >= 1 for r in unmasked)


def test_yunet_gives_five_landmarks_inside_the_box():
    rgb = read_rgb(QUALITATIVE / "unmasked_05.jpg")
    (face,) = detect.FaceDetector().detect(rgb)
    x0, y0, x1, y1 = face.box
    lm = face.landmarks
    assert lm.shape == (5, 2) and face.detector == "yunet"
    assert np.all((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1))
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # left eye, nose, right eye (in the image)
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes, nose, mouth


@pytest.mark.parametrize("size", [None, 175])
def test_yunet_framing_is_reproduced_on_lfw(mini_data, size):
    """The stored framings (box and eyes), measured again on other LFW originals (lfw-mini's)."""
    key = "yunet" if size else "yunet-own-scale"
    det = detect.FaceDetector(detect_size=size)
    assert det.framing_key == key
    got = detect.measure_framing(detect.lfw_originals(mini_data, limit=150), det)
    assert got["detected"] >= 0.98 * got["images"] and got["images"] >= 100
    np.testing.assert_allclose(got["framing"], detect.FRAMING[key], atol=0.035)
    np.testing.assert_allclose(got["eye_framing"], detect.EYE_FRAMING[key], atol=0.05, rtol=0.03)


def test_yunet_reframes_stored_crops_onto_themselves(masked_mini):
    det = detect.FaceDetector(detect_size=detect.DETECT_SIZE["crop"])
    paths = [
        p
        for c in ("not_wearing_mask", "wearing_mask")
        for p in sorted((masked_mini / "train" / c).glob("*.png"))[:12]
    ]
    ious = []
    for path in paths:
        rgb = read_rgb(path)
        crop, face = predict.normalise_crop(rgb, det)
        assert face is not None and face.detector == "yunet-own-scale"
        assert crop.shape == (128, 128, 3)
        key = face.detector
        sq = detect.crop_square(
            face.box, detect.FRAMING[key], face.landmarks, detect.EYE_FRAMING[key]
        )
        ious.append(detect.box_iou(sq, (0, 0, 128, 128)))
    # (a few LFW images hold a larger face than the aligned norm: their stored crop is tighter)
    assert np.median(ious) > 0.85 and np.mean(np.array(ious) > 0.75) >= 0.8, ious


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="yunet, mtcnn, hog"):
        detect.FaceDetector("blazeface")
