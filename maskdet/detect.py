"""Finding faces in real photos (masked ones too) and cropping them with the training framing.

Detector choice. dlib's HOG frontal detector (used by stage 02 on aligned LFW crops) was trained on
unmasked faces and misses most masked faces in street photos. The default here is **MTCNN** from
``facenet-pytorch`` (Zhang et al. 2016): a PyTorch cascade whose three small networks' weights
(2 MB) are *inside the wheel* (no download at run time), with five landmarks per face, and it finds
masked faces because its proposal stage looks at the eye region as much as at the mouth.
``facenet-pytorch`` pins old torch versions, so it is installed with ``pip install --no-deps``
(it needs only torch, torchvision, numpy, Pillow at run time). ``backend="hog"`` keeps dlib's HOG
as the baseline for comparison (:func:`compare_detectors`).

Framing. Stage 01 stores the central 64% of each 250x250 LFW deep-funneled image as a 128x128 PNG.
A face found in a photo is cut the same way: a square around the detector's box, with the size and
offset that the *same detector* gives on LFW (:data:`FRAMING`, measured with
:func:`measure_framing`: median over LFW images of the stage-01 crop square expressed in units of
the box), resampled to 128x128; the classifier then takes its usual 112 centre crop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .constants import FACE_SIZE
from .imageio import BadImage, is_image_name, read_rgb
from .landmarks import frontal_face_detector
from .manifest import read_manifest

FRAMING: dict[str, tuple[float, float, float]] = {
    # backend: (dx, dy, side) in units of the box side s = sqrt(w*h):
    # crop centre = box centre + (dx, dy) * s, crop side = side * s
    "mtcnn": (0.008, -0.019, 1.48),
    "hog": (0.032, -0.083, 1.475),
}
"""Measured with :func:`measure_framing` on 300 LFW deep-funneled originals (stage 01 of
``lfw-deepfunneled.tgz --limit-identities 400``, seed 0; MTCNN found 300/300, HOG 298/300;
interquartile ranges MTCNN (0.11, 0.04, 0.11), HOG (0, 0, 0))."""
EYE_FRAMING = (-0.02, 0.281, 3.761)
"""MTCNN only: (dx, dy, side) in units of the distance between the eyes, from the midpoint of
the eyes (same 150 LFW images as :data:`FRAMING`; interquartile ranges (0.06, 0.05, 0.31)).
With landmarks the crop is centred from the eyes, which a mask does not move, and its side is
the mean of the box-based and eye-based sides (eye distance alone shrinks on turned heads).
On 40 test pairs this raised the median overlap (IoU) of the crop squares of a face and its
masked twin from 0.85 (box only) to 0.89, and of a stored crop with itself from 0.88 to 0.94."""
DETECT_MIN_SIDE = 640
"""Photos whose longer side is below this are upscaled before detection (small faces in street
scenes are often under MTCNN's 20 px minimum at the original size)."""


@dataclass
class DetectedFace:
    """A face in a photo: box (left, top, right, bottom) in pixels, detector score, 5 landmarks
    (eyes, nose, mouth corners; MTCNN only) and the detector's name."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    detector: str = "mtcnn"
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)))


class FaceDetector:
    """``FaceDetector("mtcnn")`` (default) or ``FaceDetector("hog")``; ``detect(rgb)`` -> faces.

    MTCNN settings: ``min_face`` pixels (at the detection scale), stage thresholds, and a final
    score cut ``min_score``; images smaller than :data:`DETECT_MIN_SIDE` are also searched
    upscaled. The defaults (thresholds lowered from facenet-pytorch's 0.6/0.7/0.7 and 0.9 score)
    were chosen on ``../shared/qualitative``: they find masked faces that the stricter defaults drop
    (masked faces score lower in MTCNN's last stage) at the cost of a few false boxes.
    """

    def __init__(
        self,
        backend: str = "mtcnn",
        min_face: int = 12,
        min_score: float = 0.8,
        thresholds: tuple[float, float, float] = (0.5, 0.6, 0.6),
        upscale: bool = True,
        device: str = "cpu",
    ) -> None:
        self.backend, self.min_score, self.upscale = backend, min_score, upscale
        if backend == "mtcnn":
            try:
                from facenet_pytorch import MTCNN  # only when this detector is asked for
            except ImportError as err:  # pragma: no cover - message for users
                raise ImportError(
                    "the MTCNN face detector needs facenet-pytorch: pip install --no-deps facenet-pytorch "
                    "(its weights ship inside the package)"
                ) from err
            self._net = MTCNN(
                keep_all=True,
                min_face_size=min_face,
                thresholds=list(thresholds),
                post_process=False,
                select_largest=False,
                device=device,
            )
        elif backend == "hog":
            self._net = frontal_face_detector()
        else:
            raise ValueError(f"face detector must be 'mtcnn' or 'hog', not {backend!r}")

    def _scales(self, rgb: np.ndarray) -> list[float]:
        side = max(rgb.shape[:2])
        if side > 2 * DETECT_MIN_SIDE:  # huge photos: detect on a smaller copy
            return [2 * DETECT_MIN_SIDE / side]
        if self.upscale and side < DETECT_MIN_SIDE:  # small faces need upscaling, large ones do not
            return [1.0, DETECT_MIN_SIDE / side]
        return [1.0]

    def _detect_at(self, rgb: np.ndarray, scale: float) -> list[DetectedFace]:
        img = (
            rgb
            if scale == 1.0
            else cv2.resize(
                rgb,
                None,
                fx=scale,
                fy=scale,
                interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA,
            )
        )
        faces: list[DetectedFace] = []
        if self.backend == "mtcnn":
            with torch.inference_mode():
                boxes, probs, lms = self._net.detect(np.ascontiguousarray(img), landmarks=True)
            if boxes is not None:
                for b, p, lm in zip(boxes, probs, lms):
                    if p is not None and p >= self.min_score:
                        faces.append(
                            DetectedFace(
                                tuple(float(v) / scale for v in b),
                                float(p),
                                np.asarray(lm, dtype=np.float64) / scale,
                                "mtcnn",
                            )
                        )
        else:
            rects, scores, _ = self._net.run(img, 1, 0.0)
            for r, s in zip(rects, scores):
                box = (
                    r.left() / scale,
                    r.top() / scale,
                    (r.right() + 1) / scale,
                    (r.bottom() + 1) / scale,
                )
                faces.append(DetectedFace(box, float(s), None, "hog"))
        return faces

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every face in an RGB uint8 image, largest first, boxes in the image's pixels.

        Small photos are searched at their own size and upscaled (large faces are found at the
        first, small ones at the second); overlapping boxes are merged keeping the best score.
        """
        found = [f for s in self._scales(rgb) for f in self._detect_at(rgb, s)]
        kept = nms(found, iou=0.4)
        kept.sort(key=lambda f: -f.size)
        return kept


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(faces: list[DetectedFace], iou: float = 0.4) -> list[DetectedFace]:
    """Greedy non-maximum suppression by score."""
    kept: list[DetectedFace] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(box_iou(f.box, k.box) < iou for k in kept):
            kept.append(f)
    return kept


def crop_square(
    face_box: tuple[float, float, float, float],
    framing: tuple[float, float, float],
    landmarks: np.ndarray | None = None,
) -> tuple[float, float, float, float]:
    """The crop square (left, top, right, bottom) around a face box with a framing (dx, dy, side);
    with MTCNN's 5 landmarks the centre comes from the eyes (:data:`EYE_FRAMING`)."""
    x0, y0, x1, y1 = face_box
    s = float(np.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)))
    dx, dy, side = framing
    cx, cy = (x0 + x1) / 2 + dx * s, (y0 + y1) / 2 + dy * s
    half = side * s / 2
    if landmarks is not None and len(landmarks) >= 2:
        left_eye, right_eye = np.asarray(landmarks[0], float), np.asarray(landmarks[1], float)
        d = float(np.linalg.norm(right_eye - left_eye))
        if d > 1e-3:
            ex, ey, eside = EYE_FRAMING
            mid = (left_eye + right_eye) / 2
            cx, cy = mid[0] + ex * d, mid[1] + ey * d
            half = (half + eside * d / 2) / 2
    return cx - half, cy - half, cx + half, cy + half


def crop_face(
    rgb: np.ndarray,
    face_box: tuple[float, float, float, float],
    backend: str = "mtcnn",
    size: int = FACE_SIZE,
    framing: tuple[float, float, float] | None = None,
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """Cut a face with the training framing as a ``size`` x ``size`` uint8 RGB crop.

    Parts of the square outside the photo are filled by replicating the border.
    """
    x0, y0, x1, _ = crop_square(face_box, framing or FRAMING[backend], landmarks)
    side = x1 - x0
    if side > size:  # shrinking: cut at full resolution, then area-average (no aliasing)
        n = int(np.ceil(side))
        m = np.array([[1, 0, -x0], [0, 1, -y0]], dtype=np.float64)
        big = cv2.warpAffine(
            rgb, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return cv2.resize(
            big[: max(1, round(side)), : max(1, round(side))],
            (size, size),
            interpolation=cv2.INTER_AREA,
        )
    k = size / side
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], dtype=np.float64)
    return cv2.warpAffine(
        rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


# ------------------------------------------------------------------------- calibration

LFW_SIDE = 250
LFW_CROP = (45.0, 45.0, 205.0, 205.0)
"""The square that stage 01 keeps of a 250x250 LFW deep-funneled image (central 64%)."""


def measure_framing(
    images: Iterable[np.ndarray],
    detector: FaceDetector,
    crop: tuple[float, float, float, float] = LFW_CROP,
) -> dict:
    """Median framing (dx, dy, side) that maps the detector's box to the stage-01 crop square.

    ``images``: aligned LFW 250x250 originals (the face nearest the centre is used).
    """
    vals, total = [], 0
    cl, ct, cr, cb = crop
    for rgb in images:
        total += 1
        faces = detector.detect(rgb)
        if not faces:
            continue
        h, w = rgb.shape[:2]
        f = min(
            faces,
            key=lambda f: (
                ((f.box[0] + f.box[2]) / 2 - w / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2
            ),
        )
        x0, y0, x1, y1 = f.box
        s = f.size
        vals.append(
            (
                ((cl + cr) / 2 - (x0 + x1) / 2) / s,
                ((ct + cb) / 2 - (y0 + y1) / 2) / s,
                (cr - cl) / s,
            )
        )
    if not vals:
        raise ValueError("the detector found no face: cannot calibrate")
    arr = np.array(vals)
    med = np.median(arr, axis=0)
    iqr = np.percentile(arr, 75, axis=0) - np.percentile(arr, 25, axis=0)
    return {
        "framing": tuple(round(float(v), 3) for v in med),
        "iqr": tuple(round(float(v), 3) for v in iqr),
        "detected": len(vals),
        "images": total,
    }


def lfw_originals(data_dir: str | os.PathLike, limit: int | None = None) -> Iterable[np.ndarray]:
    """The 250x250 LFW originals behind a stage-01 DATA_DIR (unmasked rows, extracted archive)."""
    root = Path(data_dir) / "raw"
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["label"] == "not_wearing_mask" and r["status"] == "ok"
    ]
    n = 0
    for r in rows:
        hits = list(root.glob(f"*/{r['source']}"))
        if hits:
            yield read_rgb(hits[0])
            n += 1
            if limit and n >= limit:
                return


# ------------------------------------------------------------------------- comparison


def compare_detectors(
    folder: str | os.PathLike, backends: Iterable[str] = ("hog", "mtcnn")
) -> list[dict]:
    """Faces found per photo in ``folder`` by each backend (rows: file, backend, faces, seconds)."""
    files = sorted(p for p in Path(folder).iterdir() if is_image_name(p))
    out = []
    for name in backends:
        det = FaceDetector(name)
        for p in files:
            try:
                rgb = read_rgb(p)
            except BadImage as err:
                out.append(
                    {"file": p.name, "backend": name, "faces": 0, "seconds": 0.0, "error": str(err)}
                )
                continue
            t0 = time.perf_counter()
            faces = det.detect(rgb)
            out.append(
                {
                    "file": p.name,
                    "backend": name,
                    "faces": len(faces),
                    "seconds": round(time.perf_counter() - t0, 3),
                    "error": "",
                }
            )
    return out
