"""Kiosk clips made from real photos: frames of people walking up to a door, for the kiosk's
tests, its benchmark and notebook 06 (no video file is stored anywhere)."""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..core.constants import CLASS_NAMES
from ..core.imageio import BadImage, is_image_name, read_rgb
from .detect import FaceDetector
from .kiosk import video_writer

FRAME_SIZE = (640, 480)
"""Width and height of the kiosk frames (a common webcam size)."""


def single_face_photos(
    folder: str | os.PathLike, detector: FaceDetector | None = None, min_face: float = 0.3
) -> list[Path]:
    """Photos of ``folder`` in which the detector finds exactly one face, whose side is at least
    ``min_face`` of the photo's longer side (a person close to the camera). With a ``labels.csv`` (columns file, label) they alternate between the
    labels (masked, unmasked, masked, ...), so that a clip holds both."""
    detector = detector or FaceDetector()
    found = []
    for p in sorted(Path(folder).iterdir()):
        if not is_image_name(p):
            continue
        try:
            rgb = read_rgb(p)
        except BadImage:
            continue
        faces = detector.detect(rgb)
        if len(faces) == 1 and faces[0].size >= min_face * max(rgb.shape[:2]):
            found.append(p)
    labels_csv = Path(folder) / "labels.csv"
    if not labels_csv.exists():
        return found
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        label = {r["file"]: r["label"] for r in csv.DictReader(fh)}
    groups = [[p for p in found if label.get(p.name) == name] for name in reversed(CLASS_NAMES)]
    groups.append([p for p in found if label.get(p.name) not in CLASS_NAMES])
    return [p for row in itertools.zip_longest(*groups) for p in row if p is not None]


def clip_from_photos(
    photos: Sequence[str | os.PathLike],
    frames: int = 30,
    people: int = 1,
    size: tuple[int, int] = FRAME_SIZE,
) -> list[np.ndarray]:
    """RGB kiosk frames (``size``: width, height) made from real photos: ``people`` photos (1, 2
    side by side, or 4 in a 2x2 grid), each letterboxed into its tile, slowly zooming in and
    drifting sideways over the clip, as people walking up to a door."""
    cols, rows = {1: (1, 1), 2: (2, 1), 4: (2, 2)}[people]
    w, h = size
    tw, th = w // cols, h // rows
    imgs = []
    for p in list(photos)[:people]:  # letterboxed once (area-averaged), then moved per frame
        img = read_rgb(p)
        k = min(tw / img.shape[1], th / img.shape[0])
        size_k = (max(1, round(img.shape[1] * k)), max(1, round(img.shape[0] * k)))
        imgs.append(
            cv2.resize(img, size_k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        )
    if len(imgs) < people:
        raise ValueError(f"need {people} photos for the clip, got {len(imgs)}")
    out = []
    for n in range(frames):
        t = n / max(1, frames - 1)
        frame = np.full((h, w, 3), 40, np.uint8)
        for j, img in enumerate(imgs):
            ih, iw = img.shape[:2]
            k = 0.85 + 0.15 * t
            drift = 0.03 * tw * np.sin(2 * np.pi * t + j)
            m = np.array(
                [[k, 0, (tw - k * iw) / 2 + drift], [0, k, (th - k * ih) / 2]], dtype=np.float64
            )
            tile = cv2.warpAffine(img, m, (tw, th), flags=cv2.INTER_LINEAR, borderValue=(40,) * 3)
            r, c = divmod(j, cols)
            frame[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
        out.append(frame)
    return out


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 15.0) -> Path:
    """RGB frames to a video file (see :func:`video_writer`)."""
    h, w = frames[0].shape[:2]
    writer = video_writer(path, fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return Path(path)
