"""The kiosk path: face crops or whole photos through a trained or exported model
(:class:`maskdet.core.inference.MaskClassifier`), one CSV row per face.

``python -m maskdet predict --checkpoint CKPT --out preds.csv PATH...``
    PATHs are files or folders (walked recursively, image extensions only). By default every
    image is taken to be **one face crop**, of any framing from a tight face box to an LFW-like
    loose crop. The framing is normalised: the face is found with the detector of
    :mod:`maskdet.deploy.detect` (YuNet at the crop's own scale; MTCNN and HOG on the crop padded with
    grey and upscaled), and re-cut with the training framing. When no face is found the image is
    classified as it is (resized to 128, centre crop 112, as the stored training crops) and its
    row says so: ``status=no_face``, ``framing=as_is``. With ``--photos`` every face the
    detector finds in each photo is classified. One CSV row per face: path, face index, box,
    detector score, probability of a mask, label (threshold chosen on val, stored in the
    checkpoint), framing, status, error. An unreadable file gets a row with ``status=error`` and
    the reason; a photo with no face gets a row with ``status=no_face``. Nothing aborts the
    batch. ``--out`` is checked before any work: never an input or inside an input folder, never
    a file maskdet did not write (``--overwrite`` replaces one); faces are classified in batches
    across images, and each row is written (flushed) to a temporary file as soon as its batch is
    done, renamed to ``--out`` at the end or at Ctrl-C (after ``kill -9`` the rows so far are in
    ``.NAME.part.csv`` beside it, and ``--out`` is as it was); a progress bar
    counts the images. The exit status is 1 when no input image was found.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from ..core.constants import CLASS_NAMES, FACE_SIZE
from ..core.guard import printable, writing
from ..core.imageio import BadImage, is_image_name, read_rgb
from ..core.inference import MaskClassifier
from ..core.progress import bar as progress_bar
from .detect import DETECT_SIZE, DetectedFace, FaceDetector, crop_face

PAD_FRACTION = 0.5
"""Grey border added on each side of a face crop before detection (fraction of its side)."""
CSV_COLUMNS = [
    "path",
    "face",
    "left",
    "top",
    "right",
    "bottom",
    "det_score",
    "prob_mask",
    "label",
    "framing",
    "status",
    "error",
]
NO_FACE_IN_CROP = "no face found: classified as it is (framing=as_is)"


# --------------------------------------------------------------------------- framing


def normalise_crop(
    rgb: np.ndarray, detector: FaceDetector
) -> tuple[np.ndarray, DetectedFace | None]:
    """A face crop of unknown framing -> the training framing (128x128), and the face found.

    YuNet looks at the crop as it is (best at the crop's own scale: ``detect_size=None``); MTCNN
    and HOG at the crop padded with grey by :data:`PAD_FRACTION` per side, so that tight crops
    still show them a whole face. The face nearest the centre is taken, and it is re-cut from the
    original pixels (border replicated). No face: the crop is returned resized to 128 (``None``
    as face).
    """
    h, w = rgb.shape[:2]
    pad = 0 if detector.backend == "yunet" else int(round(PAD_FRACTION * max(h, w)))
    padded = (
        cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        if pad
        else rgb
    )
    faces = detector.detect(padded)
    if not faces:
        k = FACE_SIZE / min(h, w)
        resized = cv2.resize(
            rgb,
            (max(FACE_SIZE, round(w * k)), max(FACE_SIZE, round(h * k))),
            interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
        )
        y0, x0 = (resized.shape[0] - FACE_SIZE) // 2, (resized.shape[1] - FACE_SIZE) // 2
        return resized[y0 : y0 + FACE_SIZE, x0 : x0 + FACE_SIZE], None
    cy, cx = padded.shape[0] / 2, padded.shape[1] / 2
    f = min(
        faces,
        key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2,
    )
    box = (f.box[0] - pad, f.box[1] - pad, f.box[2] - pad, f.box[3] - pad)
    face = DetectedFace(
        box, f.score, None if f.landmarks is None else f.landmarks - pad, f.detector
    )
    return crop_face(rgb, box, f.detector, landmarks=face.landmarks), face


# --------------------------------------------------------------------------- predict


def iter_images(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named on the command line (whatever their name) and image files under folders."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if is_image_name(name):
                        yield Path(root) / name
        else:
            yield p


def _row(path, face="", box=None, score="", framing="", status="ok", error="") -> dict:
    """A CSV row without its classification (``prob_mask`` and ``label`` are filled later)."""
    x0, y0, x1, y1 = ("", "", "", "") if box is None else (f"{v:.1f}" for v in box)
    return {
        "path": str(path),
        "face": face,
        "left": x0,
        "top": y0,
        "right": x1,
        "bottom": y1,
        "det_score": "" if score == "" else f"{score:.4f}",
        "prob_mask": "",
        "label": "",
        "framing": framing,
        "status": status,
        "error": error,
    }


def _faces_of(
    path: Path, photos: bool, detector: FaceDetector
) -> list[tuple[dict, np.ndarray | None]]:
    """The rows of one image, each with the crop to classify (None: nothing to classify)."""
    try:
        rgb = read_rgb(path)
    except BadImage as err:
        return [(_row(path, status="error", error=str(err)), None)]
    if photos:
        faces = detector.detect(rgb)
        if not faces:
            return [(_row(path, status="no_face", error="the detector found no face"), None)]
        return [
            (
                _row(path, i, f.box, f.score, framing="detected"),
                crop_face(rgb, f.box, f.detector, landmarks=f.landmarks),
            )
            for i, f in enumerate(faces)
        ]
    crop, face = normalise_crop(rgb, detector)
    if face is None:  # classified as it is, and said so: a kiosk must be able to tell
        row = _row(path, 0, framing="as_is", status="no_face", error=NO_FACE_IN_CROP)
    else:
        row = _row(path, 0, face.box, face.score, framing="detected")
    return [(row, crop)]


def iter_predictions(
    classifier: MaskClassifier,
    paths: Iterable[str | os.PathLike],
    photos: bool = False,
    detector: FaceDetector | None = None,
    threshold: float | None = None,
    keep_crops: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> Iterator[dict]:
    """One row per face for every image under ``paths`` (see the module docstring), in input
    order, as soon as its batch is classified: faces are gathered across images into batches of
    ``batch_size``. The detector defaults to YuNet at its photo scale (``photos``) or at the
    crop's own scale. ``keep_crops``: each row also holds its 128x128 crop under ``"crop"``.
    ``progress``: a bar over the images (:mod:`maskdet.core.progress`)."""
    thr = classifier.threshold if threshold is None else threshold
    detector = detector or FaceDetector(detect_size=DETECT_SIZE["photo" if photos else "crop"])
    files = list(iter_images(paths))
    pending: list[tuple[dict, np.ndarray | None]] = []
    faces = 0
    bar = progress_bar(files, desc="predict", unit="image", disable=not progress)
    for n, path in enumerate(bar, 1):
        pending += _faces_of(path, photos, detector)
        if sum(c is not None for _, c in pending) >= batch_size or n == len(files):
            crops = [c for _, c in pending if c is not None]
            probs = iter(classifier.probs(crops, batch_size))
            for row, crop in pending:
                if crop is not None:
                    p = float(next(probs))
                    row["prob_mask"], row["label"] = f"{p:.6f}", CLASS_NAMES[int(p >= thr)]
                    faces += row["status"] == "ok"
                    if keep_crops:
                        row["crop"] = crop
                yield row
            pending = []
            bar.set_postfix(faces=faces, refresh=False)


def predict_paths(
    classifier: MaskClassifier, paths: Iterable[str | os.PathLike], **options
) -> list[dict]:
    """The rows of :func:`iter_predictions` (same keyword options) as a list, for notebooks."""
    return list(iter_predictions(classifier, paths, **options))


def write_rows(
    path: str | os.PathLike,
    rows: Iterable[dict],
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> dict[str, int]:
    """Rows (of :func:`iter_predictions`) to a CSV with :data:`CSV_COLUMNS`, through
    :func:`maskdet.core.guard.writing` (checked before the first row is asked for; rows flushed one by
    one to a temporary file renamed at the end or at Ctrl-C); names not UTF-8 escaped. Returns
    the counts: rows, images (files that exist), ok faces, no_face, errors, masked."""
    counts = dict.fromkeys(("rows", "images", "faces", "no_face", "errors", "masked"), 0)
    seen: set[str] = set()
    with (
        writing(path, inputs, overwrite) as part,
        open(part, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh,
    ):
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        fh.flush()
        for row in rows:
            w.writerow(row | {"path": printable(row["path"])})
            fh.flush()
            counts["rows"] += 1
            if row["path"] not in seen:
                seen.add(row["path"])
                counts["images"] += Path(row["path"]).is_file()
            status = row["status"]
            counts[{"ok": "faces", "no_face": "no_face", "error": "errors"}[status]] += 1
            counts["masked"] += status == "ok" and row["label"] == CLASS_NAMES[1]
    return counts
