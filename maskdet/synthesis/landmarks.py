"""Face finding shared by both synthesis backends: one face box and its 68 dlib landmarks.

The box comes from dlib's HOG frontal detector (upsample 0, then 1), taking the face nearest the
image centre (on LFW the largest face is sometimes a person in the background). When HOG finds
no face on a tight crop, :data:`FALLBACK_BOX` (calibrated on stage-01 crops) stands in and the
result says ``box_source="fallback"``. Landmarks use the 68-point model shipped by the
``face_recognition_models`` package, located with ``importlib`` (never imported, never downloaded).

Building dlib's frontal detector decodes a compressed model held in dlib's binary (0.3-0.7 s,
paid by every process that synthesizes); :func:`frontal_face_detector` saves it once as dlib's own
serialized file in :func:`cache_dir` and loads that instead (about 1 ms), the same detector.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from ..core.download import user_cache
from ..core.imageio import read_rgb
from ..core.manifest import read_manifest

LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"
DETECT_MAX_SIDE = 640
"""Larger images are detected on a downscaled copy (HOG cost grows with pixels)."""
FALLBACK_BOX = (0.227, 0.289, 0.789, 0.852)
"""(left, top, right, bottom) as fractions of width/height: the median HOG box (upsample 0,
then 1, face nearest the centre) over the 2,891 of 2,902 stage-01 128x128 LFW deep-funneled
crops where HOG found a face (``download --source lfw-deepfunneled.tgz --limit-identities 1000``,
seed 0; lfw-mini gives (0.227, 0.273, 0.789, 0.852)); re-measure with :func:`measure_fallback_box`."""


def landmark_model_path() -> Path:
    """The 68-point model file inside the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "face_recognition_models is not installed: pip install face_recognition_models "
            "(it ships shape_predictor_68_face_landmarks.dat)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / LANDMARK_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: reinstall face_recognition_models")
    return path


def cache_dir() -> Path:
    """Where derived model files are kept: ``$MASKDET_CACHE`` or ``~/.cache/maskdet``."""
    return user_cache()


def frontal_face_detector() -> dlib.fhog_object_detector:
    """dlib's HOG frontal face detector, loaded from its serialized copy in :func:`cache_dir`
    (written on first use, atomically); dlib's built-in copy when the cache cannot be used."""
    path = cache_dir() / f"dlib-{dlib.__version__}-frontal_face_detector.svm"
    if path.exists():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError:
            path.unlink(missing_ok=True)  # damaged copy: rebuild below
    detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        os.close(fd)
        detector.save(tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only home: keep using the built-in copy
    return detector


@dataclass(frozen=True)
class Face:
    """A face box (left, top, right, bottom), how it was found, and 68 (x, y) landmarks."""

    box: tuple[int, int, int, int]
    box_source: str  # "hog" or "fallback"
    landmarks: np.ndarray  # (68, 2) int


class FaceFinder:
    """HOG detector + landmark predictor, loaded once (one per worker process)."""

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        self.detector = frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path or landmark_model_path()))

    def detect(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The HOG box nearest the image centre, or None."""
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = (
            rgb
            if scale == 1.0
            else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        )
        for upsample in (0, 1):
            rects = self.detector(small, upsample)
            if len(rects):
                break
        else:
            return None
        cx, cy = small.shape[1] / 2, small.shape[0] / 2

        def dist(r: dlib.rectangle) -> float:
            return ((r.left() + r.right()) / 2 - cx) ** 2 + ((r.top() + r.bottom()) / 2 - cy) ** 2

        r = min(rects, key=dist)
        return tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))

    def find(self, rgb: np.ndarray) -> Face:
        """Box (HOG or fallback) and landmarks for the face nearest the centre."""
        box = self.detect(rgb)
        source = "hog"
        if box is None:
            h, w = rgb.shape[:2]
            fl, ft, fr, fb = FALLBACK_BOX
            box, source = (round(fl * w), round(ft * h), round(fr * w), round(fb * h)), "fallback"
        shape = self.predictor(rgb, dlib.rectangle(*box))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.int64)
        return Face(box, source, pts)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the left (points 36-41) and right (42-47) eye, as float64."""
    return landmarks[36:42].mean(0), landmarks[42:48].mean(0)


def eye_line_y(landmarks: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The y of the line through the eye centres at the columns ``xs``: a mask stays below it
    (both renderers and the quality check of stage 02 use this one line)."""
    le, re = eye_centres(landmarks)
    return le[1] + (xs - le[0]) * (re[1] - le[1]) / max(abs(re[0] - le[0]), 1e-6)


def below_eye_line(
    landmarks: np.ndarray,
    x0: int,
    y0: int,
    w: int,
    h: int,
    margin: float = 1.0,
    feather: float = 1.5,
) -> np.ndarray:
    """Soft 0..1 weight of the region (x0, y0, w, h) that is 0 above the line through the eye
    centres and rises to 1 just below it. Upstream's tall templates (KN95, N95) reach up to the
    eyes on short noses and tilted heads; a real mask is pressed below them, so the top edge is
    trimmed there instead of the pair being dropped."""
    xs = np.arange(x0, x0 + w, dtype=np.float32) + 0.5
    ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None] + 0.5
    eye_y = eye_line_y(landmarks, xs)
    return np.clip((ys - eye_y - margin) / feather, 0.0, 1.0).astype(np.float32)


def measure_fallback_box(images: Iterable[np.ndarray], finder: FaceFinder | None = None) -> dict:
    """Median HOG box as fractions of the image over ``images`` (the value for FALLBACK_BOX)."""
    finder = finder or FaceFinder()
    boxes, total = [], 0
    for rgb in images:
        total += 1
        box = finder.detect(rgb)
        if box is not None:
            h, w = rgb.shape[:2]
            boxes.append((box[0] / w, box[1] / h, box[2] / w, box[3] / h))
    if not boxes:
        raise ValueError("HOG found no face in any image: cannot calibrate")
    med = np.median(np.array(boxes), axis=0)
    return {"box": tuple(round(float(v), 3) for v in med), "detected": len(boxes), "images": total}


def measure_fallback_box_on(data_dir: str | os.PathLike, limit: int | None = None) -> dict:
    """:func:`measure_fallback_box` over the stage-01 crops of ``data_dir`` (not_wearing_mask)."""
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["label"] == "not_wearing_mask" and r["status"] != "skipped"
    ]
    rows = rows[:limit] if limit else rows
    return measure_fallback_box(read_rgb(Path(data_dir) / r["path"]) for r in rows)
