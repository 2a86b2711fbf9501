"""The pose and framing levers' warps (issue 18): homographies, normalised output -> input.

A planar face turned by yaw and pitch in front of a camera (:data:`FOCAL`), a random keystone, a
detector-like box, each crop shrunk into the image (``inside``) or moved to keep the nose and
mouth in view (:data:`FACE_REGION`). :func:`lever_warps` turns a batch's draws into warps for
:class:`maskdet.loading.augment.BatchAugment`; :func:`pixel_homography` makes them OpenCV pixel maps.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.constants import FACE_SIZE
from .augment_presets import AugmentConfig

FOCAL = 3.0
"""The pose warps' focal length in half-sides of the crop: a camera about 1.5 crop widths away,
as a kiosk's is from a face (a planar face turned in front of it)."""
_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _camera_rotation(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Per image (B, 3, 3): output -> input normalised coordinates of a planar face at
    :data:`FOCAL` turned by ``yaw`` (about the vertical axis) and ``pitch`` (the horizontal one)
    about its centre, which stays fixed."""
    b = len(yaw)
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.zeros((b, 3, 3))
    r_yaw[:, 0, 0], r_yaw[:, 0, 2], r_yaw[:, 1, 1] = cy, sy, 1
    r_yaw[:, 2, 0], r_yaw[:, 2, 2] = -sy, cy
    r_pitch = np.zeros((b, 3, 3))
    r_pitch[:, 0, 0], r_pitch[:, 1, 1], r_pitch[:, 1, 2] = 1, cp, -sp
    r_pitch[:, 2, 1], r_pitch[:, 2, 2] = sp, cp
    # a plane point (x, y) sits at (x, y, FOCAL) in camera space (centre c = (0, 0, FOCAL)):
    # turned = R (X - c) + c, seen = K turned, with K = diag(FOCAL, FOCAL, 1)
    to_plane = np.diag([1.0, 1.0, 0.0])
    centre = np.zeros((3, 3))
    centre[2, 2] = FOCAL
    forward = np.diag([FOCAL, FOCAL, 1.0]) @ (r_yaw @ r_pitch @ to_plane + centre)
    return np.linalg.inv(forward)


def _keystone(offsets: np.ndarray) -> np.ndarray:
    """Per image (B, 3, 3): the homography taking the crop's corners (-1, -1), (1, -1),
    (1, 1), (-1, 1) to themselves moved by ``offsets`` (B, 4, 2)."""
    b = len(offsets)
    dst = _SQUARE[None] + offsets
    a = np.zeros((b, 8, 8))
    rhs = np.zeros((b, 8))
    for i, (x, y) in enumerate(_SQUARE):
        u, v = dst[:, i, 0], dst[:, i, 1]
        a[:, 2 * i, :3], a[:, 2 * i, 6:] = [x, y, 1], np.stack([-u * x, -u * y], 1)
        a[:, 2 * i + 1, 3:6], a[:, 2 * i + 1, 6:] = [x, y, 1], np.stack([-v * x, -v * y], 1)
        rhs[:, 2 * i], rhs[:, 2 * i + 1] = u, v
    h = np.linalg.solve(a, rhs[..., None])[..., 0]
    return np.concatenate([h, np.ones((b, 1))], 1).reshape(b, 3, 3)


def corners_in_input(warp: np.ndarray, k: np.ndarray | float = 1.0) -> np.ndarray:
    """Where the output's corners, shrunk by ``k`` about its centre, fall in the input
    (B, 4, 2 normalised coordinates; ``inf`` behind the camera)."""
    sq = np.concatenate([_SQUARE, np.ones((4, 1))], 1)  # (4, 3)
    k = np.broadcast_to(np.asarray(k, dtype=np.float64), (len(warp),))
    scale = np.stack([k, k, np.ones_like(k)], 1)[:, None, :]  # (B, 1, 3)
    pts = (sq[None] * scale) @ warp.transpose(0, 2, 1)  # (B, 4, 3)
    w = pts[..., 2:]
    return np.where(w > 1e-9, pts[..., :2] / np.where(w > 1e-9, w, 1), np.inf)


FACE_REGION = (-0.36, -0.1, 0.36, 0.8)
"""Where the nose and mouth lie in stage 01's framing (normalised x0, y0, x1, y1 of the 128-pixel
face; lfw-mini: dlib's points 30-66 of 149 HOG-found faces lie in x -0.27..0.35, y -0.07..0.77):
``keep_face`` keeps this box in view (a crop that cuts it moves half-way, then all the way to
its centre; one still cut takes the val view)."""


def face_centre(region: tuple[float, ...] = FACE_REGION) -> tuple[float, float]:
    """The centre of ``region`` (normalised input coordinates)."""
    return (region[0] + region[2]) / 2, (region[1] + region[3]) / 2


def face_in_view(warp: np.ndarray, region: tuple[float, ...] = FACE_REGION) -> np.ndarray:
    """Per image (B,) bool: whether ``region``'s corners (input) fall inside the output."""
    x0, y0, x1, y1 = region
    box = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]])
    seen = box[None] @ np.linalg.inv(warp).transpose(0, 2, 1)
    w = seen[..., 2]
    xy = seen[..., :2] / np.where(np.abs(w) > 1e-9, w, 1e-9)[..., None]
    return ((w > 0) & (np.abs(xy) <= 1).all(2)).all(1)


def fit_inside(warp: np.ndarray, steps: int = 24, smallest: float = 0.2) -> np.ndarray:
    """``warp`` (B, 3, 3, output -> input) with each output shrunk about its centre (zoomed in)
    by the largest factor that puts its four corners inside the input, so that no pixel is read
    from outside the image (at least ``smallest``)."""

    def inside(k: np.ndarray) -> np.ndarray:
        return (np.abs(corners_in_input(warp, k)) <= 1).all((1, 2))

    lo, hi = np.full(len(warp), smallest), np.ones(len(warp))
    done = inside(hi)
    for _ in range(steps):  # bisection: the shrunk outputs are nested
        mid = (lo + hi) / 2
        ok = inside(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    k = np.where(done, 1.0, lo)
    return warp * np.stack([k, k, np.ones_like(k)], 1)[:, None, :]  # warp @ diag(k, k, 1)


def lever_warps(
    cfg: AugmentConfig, size: int, crop: np.ndarray, v: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """The crops (B, 3, 3 homographies, output -> input) of the pose and framing levers.

    ``crop``: the default family's draws per image (crop width and height, centre, angle,
    flip, aspect ratio); ``v``: 10 uniforms (yaw, pitch, 8 corner moves) and ``n``: 3
    normals (box side, box centre) per image. The crop (or, with ``box_jitter``, a
    detector-like box) seen through the pose and keystone; then shrunk into the image
    (``inside``) and moved to keep the nose and mouth in view (``keep_face``) of an output of
    ``size`` pixels (seen as a crop of the ``FACE_SIZE`` face)."""
    c, b = cfg, len(crop)
    sw, sh, tx, ty, ang, flip, ar = crop.T
    if c.box_jitter:  # replaces the uniform crop: a detector's box around the face
        box = size / FACE_SIZE * np.exp(c.box_jitter * n[0])
        sw, sh = box * np.sqrt(ar), box / np.sqrt(ar)
        # the centre moves N(0, j/2) crop sides (a side is 2 * sw normalised units)
        shift = np.clip(c.box_jitter * n[1:], -0.5, 0.5)
        tx, ty = shift[0] * sw, shift[1] * sh
    pose = _camera_rotation(
        (2 * v[0] - 1) * math.radians(c.yaw_deg), (2 * v[1] - 1) * math.radians(c.pitch_deg)
    )
    lens = pose @ _keystone((2 * v[2:10].T.reshape(b, 4, 2) - 1) * c.perspective)
    cos, sin = np.cos(ang), np.sin(ang)
    cx, cy = face_centre()

    def framed(drawn: float) -> np.ndarray:  # the crop's centre: as drawn, else the face's
        affine = np.zeros((b, 3, 3))
        affine[:, 0] = np.stack([sw * cos * flip, -sh * sin, drawn * tx + (1 - drawn) * cx], 1)
        affine[:, 1] = np.stack([sw * sin * flip, sh * cos, drawn * ty + (1 - drawn) * cy], 1)
        affine[:, 2, 2] = 1
        return fit_inside(lens @ affine) if c.inside else lens @ affine

    warp = framed(1.0)
    if not c.keep_face:
        return warp
    for drawn in (0.5, 0.0):  # a crop that cuts the nose or mouth moves towards them
        cut = ~face_in_view(warp)
        if cut.any():
            warp[cut] = framed(drawn)[cut]
    cut = ~face_in_view(warp)  # still cut (rare): the val view, flipped as drawn
    side = size / FACE_SIZE
    warp[cut] = (
        np.diag([side, side, 1.0]) * np.stack([flip, np.ones(b), np.ones(b)], 1)[:, None][cut]
    )
    return warp


def pixel_homography(warp: np.ndarray, w_in: int, s: int) -> np.ndarray:
    """Normalised (``align_corners=False``) output -> input homographies (B, 3, 3) as pixel
    maps from an ``s`` x ``s`` output to a ``w_in``-wide input (for ``cv2.warpPerspective``)."""
    to_norm = np.array([[2 / s, 0, 1 / s - 1], [0, 2 / s, 1 / s - 1], [0, 0, 1]])
    to_pixel = np.array([[w_in / 2, 0, (w_in - 1) / 2], [0, w_in / 2, (w_in - 1) / 2], [0, 0, 1]])
    return to_pixel @ warp @ to_norm
