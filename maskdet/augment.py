"""The train augmentation family, its presets, and the two ways of applying it.

:class:`AugmentConfig` holds the settings both loaders read. Per image (the ``dataloader`` path):
:func:`train_transform` with ``torchvision.transforms.v2``. Per batch (the ``cached`` path):
:class:`BatchAugment` draws every random parameter of a batch on the CPU, then applies them with
tensor operations on the batch's device (one ``grid_sample`` for crop + flip + rotation, a batched
colour matrix, down-up resampling, grouped-conv blur, :func:`maskdet.jpeg.jpeg_with_tables`) or,
on a CPU, with OpenCV's ``uint8`` kernels in two threads.

Train augmentations aim at real masks on real photos, not MaskTheFace's artefacts: random resized
crop (scale range) to 112, horizontal flip, small rotations, mild colour jitter, blur, low
resolution and JPEG quality. Val/test: deterministic resize to 128 and centre crop to 112.
Both use ImageNet normalisation.

Opt-in levers against real misses (issue 18; every one off in ``default``, so its draws and
bytes are unchanged): pose (``yaw_deg``/``pitch_deg``: a camera-rotation homography, a turned or
nodding head seen by a planar face; ``perspective``: a random keystone), detector-like framing
(``box_jitter``: the crop drawn as a face detector's box varies), ``inside`` (each crop shrunk
until it lies in the image: no reflected border), and no colour shortcut (``grey_p``: random
grayscale; strong ``hue``/``saturation`` ranges). :data:`LEVERS` names them; the presets
``default+<lever>`` and ``levers`` (all but ``inside``) select them by name (``--aug``).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from .constants import FACE_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from .jpeg import jpeg_tables, jpeg_with_tables
from .system import device_constant, usable_cores


@dataclass(frozen=True)
class AugmentConfig:
    """The train augmentation family; both loaders read the same settings."""

    scale: tuple[float, float] = (0.55, 1.0)  # area fraction kept by the random resized crop
    ratio: tuple[float, float] = (0.85, 1.18)  # aspect ratio range of the crop
    hflip: float = 0.5
    rotate_deg: float = 10.0  # uniform in [-rotate_deg, rotate_deg]
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.6)
    lowres_p: float = 0.2
    lowres_side: tuple[int, int] = (28, 72)  # downsample to this side, then back up
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)
    # issue 18's levers, each off by default (the default family's draws are unchanged)
    yaw_deg: float = 0.0  # head turned: camera rotation about the vertical axis, uniform +-
    pitch_deg: float = 0.0  # head nodding: camera rotation about the horizontal axis, uniform +-
    perspective: float = 0.0  # each corner moved by up to this fraction of the half-side
    box_jitter: float = 0.0  # detector-like box: side x exp(N(0, j)), centre moved N(0, j/2) sides
    inside: bool = False  # shrink a crop until its four corners lie in the image
    grey_p: float = 0.0  # probability of a grayscale image
    keep_face: bool = False  # move a crop that would cut the nose or mouth (:data:`FACE_REGION`)

    @property
    def projective(self) -> bool:
        """Whether the crop is a homography (the pose, framing or inside levers), not affine."""
        return bool(
            self.yaw_deg
            or self.pitch_deg
            or self.perspective
            or self.box_jitter
            or self.inside
            or self.keep_face
        )

    @property
    def extra_draws(self) -> bool:
        """Whether a batch draws the levers' parameters (after the default family's)."""
        return self.projective or bool(self.grey_p)


LEVERS: dict[str, dict] = {
    "rotate": {"rotate_deg": 20.0, "keep_face": True},
    "yaw": {"yaw_deg": 30.0, "pitch_deg": 10.0, "keep_face": True},
    "perspective": {"perspective": 0.12, "keep_face": True},
    "box": {"box_jitter": 0.12, "keep_face": True},
    "grey": {"grey_p": 0.2},
    "hue": {"hue": 0.5, "saturation": 0.8},
    "inside": {"inside": True, "keep_face": True},
}
"""Issue 18's augmentation levers as changes to ``default``: ``rotate`` (up to 20 degrees),
``yaw`` (turned and nodding heads), ``perspective`` (keystone), ``box`` (framing as a detector's
box varies), ``grey`` (one image in five grayscale), ``hue`` (any hue, saturation 0.2-1.8),
``inside`` (no pixel read from outside the image: no reflected border, at the price of tighter
crops). The geometric ones keep the nose and mouth in view (the label's evidence). ``levers``:
all but ``inside``. Opt-in: not measured on 60-minute runs. One screening (2026-12-03, the shared
2-core CPU, load 6-9; ResNet-18, random init, 3 epochs, 1,000 train images of 700 LFW people,
builtin masks, ``train --aug levers``): ``../shared/realdev`` AUC 0.808 with ``levers`` and the
``real,+skin,+prints`` look, 0.966 with ``default`` and ``real`` (train loss 0.67 against 0.23:
3 epochs do not learn the harder task)."""


def _with_levers(base: AugmentConfig, *names: str) -> AugmentConfig:
    """``base`` with the changes of the levers ``names`` (:data:`LEVERS`)."""
    changes: dict = {}
    for name in names:
        changes |= LEVERS[name]
    return replace(base, **changes)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "default": AugmentConfig(),
    "light": AugmentConfig(scale=(0.7, 1.0), rotate_deg=5.0, blur_p=0.0, lowres_p=0.0, jpeg_p=0.0),
    "none": AugmentConfig(
        scale=(0.766, 0.766),
        ratio=(1.0, 1.0),
        hflip=0.0,
        rotate_deg=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        blur_p=0.0,
        lowres_p=0.0,
        jpeg_p=0.0,
    ),
}
BASE_AUGMENTS = tuple(AUGMENT_PRESETS)
"""The presets before issue 18's levers (the ones the notebooks list)."""
AUGMENT_PRESETS |= {f"default+{k}": _with_levers(AUGMENT_PRESETS["default"], k) for k in LEVERS}
AUGMENT_PRESETS["levers"] = _with_levers(
    AUGMENT_PRESETS["default"], *(k for k in LEVERS if k != "inside")
)
"""``none`` is the val/test view (centre 112 of 128) without randomness; ``default+<lever>``
adds one of :data:`LEVERS`, ``levers`` all of them but ``inside``."""


def get_augment(aug: str | AugmentConfig) -> AugmentConfig:
    if isinstance(aug, AugmentConfig):
        return aug
    if aug not in AUGMENT_PRESETS:
        raise ValueError(
            f"unknown augmentation preset {aug!r}; choose from {sorted(AUGMENT_PRESETS)}"
        )
    return AUGMENT_PRESETS[aug]


class _LowRes(torch.nn.Module):
    """Down-sample to a random side and back up (per image, uint8 CHW tensor)."""

    def __init__(self, sides: tuple[int, int]):
        super().__init__()
        self.sides = sides

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        side = int(torch.randint(self.sides[0], self.sides[1] + 1, ()).item())
        h, w = img.shape[-2:]
        small = F.interpolate(img[None].float(), size=(side, side), mode="area")
        big = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return big[0].round().clamp(0, 255).to(torch.uint8)


class _OneImage(torch.nn.Module):
    """:class:`BatchAugment`'s CPU kernel on one uint8 CHW image, its parameters drawn from
    torch's global RNG (seeded per worker by the DataLoader): the per-image path of the levers,
    so both loaders apply the same family."""

    def __init__(self, aug: AugmentConfig, size: int):
        super().__init__()
        self.batch = BatchAugment(aug, size, backend="cv2")

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        hwc = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        return self.batch.apply_cv2([hwc], self.batch.sample(1), threads=1)[0]


def train_transform(aug: str | AugmentConfig = "default", size: int = IMAGE_SIZE):
    """Per-image train transform (torchvision v2) on a uint8 CHW tensor -> normalised float.
    With one of issue 18's levers on, :class:`BatchAugment`'s CPU kernel per image."""
    c = get_augment(aug)
    if c.extra_draws:
        return _OneImage(c, size)
    steps: list = []
    if c.rotate_deg:
        steps.append(v2.RandomRotation(c.rotate_deg, interpolation=v2.InterpolationMode.BILINEAR))
    steps.append(v2.RandomResizedCrop(size, scale=c.scale, ratio=c.ratio, antialias=True))
    if c.hflip:
        steps.append(v2.RandomHorizontalFlip(c.hflip))
    if c.brightness or c.contrast or c.saturation or c.hue:
        steps.append(v2.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue))
    if c.lowres_p:
        steps.append(v2.RandomApply([_LowRes(c.lowres_side)], p=c.lowres_p))
    if c.blur_p:
        steps.append(v2.RandomApply([v2.GaussianBlur(7, sigma=c.blur_sigma)], p=c.blur_p))
    if c.jpeg_p:
        steps.append(v2.RandomApply([v2.JPEG(list(c.jpeg_quality))], p=c.jpeg_p))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def eval_transform(size: int = IMAGE_SIZE, resize: int = FACE_SIZE):
    """Deterministic val/test transform: resize the shorter side, centre crop, normalise."""
    return v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def to_tensor_uint8(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 array -> 3xHxW uint8 tensor (a tv_tensors.Image, so v2 treats it as an image)."""
    return tv_tensors.Image(
        torch.from_numpy(np.array(rgb, copy=not rgb.flags.writeable)).permute(2, 0, 1)
    )


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Normalised float batch -> float in [0, 1] (for figures and TensorBoard)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(-1, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)


_LUM = (0.299, 0.587, 0.114)


def gaussian_taps(sigma: np.ndarray, ksize: int = 7) -> np.ndarray:
    """Normalised 1-D Gaussian kernels ``(B, ksize)`` for per-image ``sigma`` (B,)."""
    r = np.arange(ksize) - ksize // 2
    k = np.exp(-0.5 * (r[None] / np.asarray(sigma, dtype=np.float64)[:, None]) ** 2)
    return k / k.sum(1, keepdims=True)


_GREY = np.ones((3, 1)) @ np.array(_LUM)[None]
"""RGB -> its luminance on every channel (a grayscale image)."""
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


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


class BatchAugment:
    """The train augmentation family applied to a whole batch at once.

    Input: uint8 ``(B, 3, H, W)``; output: normalised float ``(B, 3, size, size)`` on the input's
    device. :meth:`sample` draws every random parameter of the batch on the CPU from
    ``generator`` (seeded per batch by the loader), so both kernels and every device see the
    same parameters for the same seed:

    ``torch``  tensor operations on the training device (GPU): one ``grid_sample`` for crop + flip
               + rotation, one batched 3x3 colour matrix, down-up resampling, a grouped-conv blur
               and :func:`jpeg_compress`, each on the whole batch and kept where the image's draw
               says so. No step waits for the GPU (no ``.item()``, no ``nonzero``): the
               parameters travel in one pinned copy, so batches can be prepared ahead on a side
               stream while the model trains.
    ``cv2``    the same parameters with OpenCV's SIMD ``uint8`` kernels per image; on a CPU this
               is several times faster than float tensor ops (the default when ``device`` is CPU).
    """

    def __init__(
        self, aug: str | AugmentConfig = "default", size: int = IMAGE_SIZE, backend: str = "auto"
    ):
        if backend not in ("auto", "torch", "cv2"):
            raise ValueError(f"backend must be auto, torch or cv2, not {backend!r}")
        self.cfg, self.size, self.backend = get_augment(aug), size, backend

    # -- parameters
    def sample(self, b: int, g: torch.Generator | None = None) -> dict:
        """Per-image parameters (CPU tensors): affine ``theta`` (B,2,3, normalised coordinates),
        the colour map ``colour`` (B,3,3) and ``grey_gain`` (B,), and the subsets (boolean) with
        the batch's low-resolution side, blur sigmas and JPEG qualities. With a pose or framing
        lever also ``warp`` (B,3,3, output -> input homographies; the kernels use it instead of
        ``theta``); the levers' draws come after the default family's, from the same generator.

        One draw of uniforms from ``generator``, then NumPy on these small arrays (a tenth of
        the time of the same maths as tensor operations)."""
        c = self.cfg
        u = torch.rand(16, b, generator=g, dtype=torch.float64).numpy()

        def uniform(row: int, lo: float, hi: float) -> np.ndarray:
            return lo + (hi - lo) * u[row]

        area = uniform(0, *c.scale)  # area fraction kept by the crop
        ar = np.exp(uniform(1, math.log(c.ratio[0]), math.log(c.ratio[1])))
        sw = np.minimum(np.sqrt(area * ar), 1.0)  # crop width / image width
        sh = np.minimum(np.sqrt(area / ar), 1.0)
        tx, ty = uniform(2, -1, 1) * (1 - sw), uniform(3, -1, 1) * (1 - sh)
        ang = uniform(4, -1, 1) * math.radians(c.rotate_deg)
        flip = np.where(u[5] < c.hflip, -1.0, 1.0)
        cos, sin = np.cos(ang), np.sin(ang)
        theta = np.stack(
            [
                np.stack([sw * cos * flip, -sh * sin, tx], 1),
                np.stack([sw * sin * flip, sh * cos, ty], 1),
            ],
            1,
        )
        colour, grey_gain = self.colour_matrix(
            uniform(6, 1 - c.brightness, 1 + c.brightness),
            uniform(7, 1 - c.contrast, 1 + c.contrast),
            uniform(8, 1 - c.saturation, 1 + c.saturation),
            uniform(9, -c.hue, c.hue) * 2 * math.pi,
        )
        side = c.lowres_side[0] + (c.lowres_side[1] - c.lowres_side[0]) * u[15, 0]
        quality = np.round(uniform(13, *c.jpeg_quality))
        levers: dict = {}
        if c.extra_draws:  # drawn after the default family's, so those stay as they were
            v = torch.rand(11, b, generator=g, dtype=torch.float64).numpy()
            if c.grey_p:
                colour = np.where((v[0] < c.grey_p)[:, None, None], _GREY @ colour, colour)
            if c.projective:
                n = torch.randn(3, b, generator=g, dtype=torch.float64).numpy()
                crop = np.stack([sw, sh, tx, ty, ang, flip, ar], 1)
                levers["warp"] = self._lever_warps(crop, v[1:11], n)

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return {k: f32(a) for k, a in levers.items()} | {
            "theta": f32(theta),
            "colour": f32(colour),
            "grey_gain": f32(grey_gain),
            "lowres": torch.from_numpy(u[10] < c.lowres_p),
            "lowres_side": int(side),
            "blur": torch.from_numpy(u[11] < c.blur_p),
            "sigma": f32(uniform(12, *c.blur_sigma)),
            "jpeg": torch.from_numpy(u[14] < c.jpeg_p),
            "quality": torch.from_numpy(quality.astype(np.int32)),
        }

    def _lever_warps(self, crop: np.ndarray, v: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The crops (B, 3, 3 homographies, output -> input) of the pose and framing levers.

        ``crop``: the default family's draws per image (crop width and height, centre, angle,
        flip, aspect ratio); ``v``: 10 uniforms (yaw, pitch, 8 corner moves) and ``n``: 3
        normals (box side, box centre) per image. The crop (or, with ``box_jitter``, a
        detector-like box) seen through the pose and keystone; then shrunk into the image
        (``inside``) and moved to keep the nose and mouth in view (``keep_face``)."""
        c, b = self.cfg, len(crop)
        sw, sh, tx, ty, ang, flip, ar = crop.T
        if c.box_jitter:  # replaces the uniform crop: a detector's box around the face
            box = self.size / FACE_SIZE * np.exp(c.box_jitter * n[0])
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
        side = self.size / FACE_SIZE
        warp[cut] = (
            np.diag([side, side, 1.0]) * np.stack([flip, np.ones(b), np.ones(b)], 1)[:, None][cut]
        )
        return warp

    @staticmethod
    def merge(params: list[dict]) -> dict:
        """The parameters of several batches (:meth:`sample`) as those of one batch, their
        images in order: each batch keeps its own low-resolution side (``segments``)."""
        if len(params) == 1:
            return params[0]
        out = {
            k: torch.cat([p[k] for p in params]) for k, v in params[0].items() if torch.is_tensor(v)
        }
        segments = [(p["lowres_side"], len(p["theta"])) for p in params]
        return out | {"lowres_side": segments[0][0], "segments": segments}

    @staticmethod
    def take(p: dict, part: slice) -> dict:
        """The parameters (:meth:`sample`) of images ``part`` of a batch: a rank's share of a
        global batch under DDP (each image's parameters are its own)."""
        return {k: v[part] if torch.is_tensor(v) else v for k, v in p.items()}

    @staticmethod
    def colour_matrix(
        bri: np.ndarray, con: np.ndarray, sat: np.ndarray, hue: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-image affine colour map on RGB: ``y = M x + g * grey`` with ``grey`` the image's
        mean grey level (brightness, contrast around that grey, saturation, hue as a YIQ
        rotation). Returns ``M`` (B,3,3) and ``g`` (B,)."""
        b = bri.shape[0]
        eye = np.eye(3)
        m = eye * (bri * con)[:, None, None]
        grey_mat = np.ones((3, 1)) @ np.array(_LUM)[None]
        m = (sat[:, None, None] * eye + (1 - sat)[:, None, None] * grey_mat) @ m
        rot = np.zeros((b, 3, 3))
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = np.cos(hue), -np.sin(hue)
        rot[:, 2, 1], rot[:, 2, 2] = np.sin(hue), np.cos(hue)
        m = _FROM_YIQ @ rot @ _TO_YIQ @ m
        return m, (1 - con) * bri

    def __call__(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        p = self.sample(x.shape[0], g)
        if self.kernel(x.device) == "cv2":
            return self.apply_cv2(list(x.permute(0, 2, 3, 1).numpy()), p)
        return self._apply_torch(x, p)

    def kernel(self, device: torch.device) -> str:
        """``torch`` or ``cv2``: the kernel used for a batch on ``device``."""
        if self.backend == "auto":
            return "torch" if device.type != "cpu" else "cv2"
        return self.backend

    # -- kernels
    _PACKED = (
        ("theta", 6),
        ("colour", 9),
        ("grey", 9),
        ("flags", 3),
        ("blur", 21),
        ("tables", 128),
    )
    """Per-image columns of the packed parameter array (:meth:`_params_on`)."""

    @classmethod
    def _params_on(cls, p: dict, device: torch.device) -> dict[str, torch.Tensor]:
        """The batch's parameters as float32 views of one array on ``device``, sent in one
        pinned copy, with everything that does not depend on pixels already computed on the
        CPU: the affine ``theta``, the colour map and its grey term (``grey @ mean RGB`` is the
        grey level times the gain, on every channel), the three subset flags, separable blur
        taps per channel and the JPEG tables."""
        b = p["theta"].shape[0]
        lum = np.array(_LUM)
        grey = p["grey_gain"].numpy()[:, None, None] * np.ones((3, 1)) @ lum[None]
        flags = np.stack([p[k].numpy() for k in ("lowres", "blur", "jpeg")], 1)
        taps = np.repeat(gaussian_taps(p["sigma"].numpy()), 3, 0)
        cols = {
            "theta": p["theta"].numpy(),
            "colour": p["colour"].numpy(),
            "grey": grey,
            "flags": flags,
            "blur": taps,
            "tables": jpeg_tables(p["quality"].numpy()),
        }
        layout = cls._PACKED
        if "warp" in p:  # a homography crop (issue 18's pose and framing levers)
            cols["warp"] = p["warp"].numpy()
            layout = layout + (("warp", 9),)
        packed = np.concatenate([cols[k].reshape(b, n) for k, n in layout], 1)
        t = torch.from_numpy(packed.astype(np.float32))
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            t = t.to(device)
        out, i = {}, 0
        for k, n in layout:
            out[k] = t[:, i : i + n]
            i += n
        return out

    def _apply_torch(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """The ``torch`` kernel: about 40 tensor operations per batch in all (each a kernel
        launch on a GPU, where the host's launch time, not the arithmetic, is the cost)."""
        dev, b, s = x.device, x.shape[0], self.size
        q = self._params_on(p, dev)
        if "warp" in q:  # homography: the pixel grid through it, then the division
            ident = torch.eye(2, 3, device=dev).expand(b, 2, 3)
            grid = F.affine_grid(ident, [b, 3, s, s], align_corners=False).view(b, s * s, 2)
            proj = torch.baddbmm(
                q["warp"].view(b, 3, 3)[:, :, 2:].transpose(1, 2),
                grid,
                q["warp"].view(b, 3, 3)[:, :, :2].transpose(1, 2),
            )
            grid = (proj[..., :2] / proj[..., 2:].clamp_min(1e-6)).view(b, s, s, 2)
        else:
            grid = F.affine_grid(q["theta"].view(b, 2, 3), [b, 3, s, s], align_corners=False)
        img = x.float()
        if x.shape[-1] > 1.5 * s:  # strong down-scaling: pre-filter against aliasing
            img = F.interpolate(img, scale_factor=s / x.shape[-1], mode="area")
        img = F.grid_sample(
            img, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        bias = torch.bmm(q["grey"].view(b, 3, 3), img.mean((2, 3)).unsqueeze(2))  # (B, 3, 1)
        img = torch.baddbmm(bias, q["colour"].view(b, 3, 3), img.flatten(2)).view(b, 3, s, s)
        img = img.clamp_(0, 255)
        drawn = (q["flags"] > 0.5).view(b, 3, 1, 1, 1).unbind(1)  # lowres, blur, jpeg
        # every step below is a convex combination of pixels: the image stays in 0..255
        if bool(p["lowres"].any()):  # CPU flags: deciding costs no GPU sync
            ups, start = [], 0
            for side, n in p.get("segments", [(p["lowres_side"], b)]):  # one side per batch
                chunk = img[start : start + n]
                if bool(p["lowres"][start : start + n].any()):
                    small = F.interpolate(chunk, size=(side, side), mode="area")
                    chunk = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
                ups.append(chunk)
                start += n
            img = torch.where(drawn[0], ups[0] if len(ups) == 1 else torch.cat(ups), img)
        if bool(p["blur"].any()):
            # reflect-pad both sides at once: reflection commutes with the vertical pass
            sub = F.pad(img.view(1, b * 3, s, s), (3, 3, 3, 3), mode="reflect")
            taps = q["blur"].reshape(b * 3, 1, 7, 1)
            sub = F.conv2d(sub, taps, groups=b * 3)
            sub = F.conv2d(sub, taps.view(b * 3, 1, 1, 7), groups=b * 3)
            img = torch.where(drawn[1], sub.view(b, 3, s, s), img)
        if bool(p["jpeg"].any()):
            img = torch.where(drawn[2], jpeg_with_tables(img, q["tables"].view(b, 2, 64)), img)
        return _normalise(img)

    def apply_cv2(
        self, images: list[np.ndarray], p: dict, threads: int | None = None
    ) -> torch.Tensor:
        """The ``cv2`` kernel on HWC uint8 RGB arrays (views into the cache: no gather copy).

        Per image: an RGBA copy (OpenCV's 4-channel warp is twice as fast as 3-channel), one
        ``warpAffine`` (crop, scale, flip, rotation), back to RGB, the colour map
        (``cv2.transform``), then low resolution, blur and JPEG where drawn.
        Images are independent, so ``threads`` (default: 2 on a machine with 2 or more cores)
        each take a share: OpenCV releases the GIL inside every call. Finally the whole batch is
        ImageNet-normalised by one per-channel lookup table (float32 NHWC)."""
        s, b = self.size, len(images)
        w_in = images[0].shape[1]
        theta = p["theta"].double().numpy()
        a = theta[:, :, :2]
        # normalised (align_corners=False) affine -> pixel inverse map for cv2.warpAffine
        mats = (w_in / s) * a
        offs = (w_in / 2) * (a @ np.array([1.0 / s - 1, 1.0 / s - 1]) + theta[:, :, 2] + 1) - 0.5
        warp = np.concatenate([mats, offs[:, :, None]], 2)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if w_in > 1.5 * s:
            flags = cv2.INTER_AREA | cv2.WARP_INVERSE_MAP
        if "warp" in p:  # homography: normalised output -> input, as pixel maps
            warp = pixel_homography(p["warp"].double().numpy(), w_in, s)
        cmat = np.zeros((b, 3, 4))  # colour matrix | offset
        cmat[:, :, :3] = p["colour"].double().numpy()
        gain = p["grey_gain"].numpy()
        lowres, blur, jpeg = p["lowres"].tolist(), p["blur"].tolist(), p["jpeg"].tolist()
        side, sigma, quality = p["lowres_side"], p["sigma"].tolist(), p["quality"].tolist()
        rgb = np.empty((b, s, s, 3), dtype=np.uint8)
        lr, lg, lb = _LUM

        def run(lo: int, hi: int) -> None:
            rgba = np.empty(images[0].shape[:2] + (4,), dtype=np.uint8)
            warped = np.empty((s, s, 4), dtype=np.uint8)
            warped3 = np.empty((s, s, 3), dtype=np.uint8)
            for i in range(lo, hi):
                cv2.cvtColor(images[i], cv2.COLOR_RGB2RGBA, dst=rgba)
                (cv2.warpPerspective if warp.shape[1] == 3 else cv2.warpAffine)(
                    rgba,
                    warp[i],
                    (s, s),
                    dst=warped,
                    flags=flags,
                    borderMode=cv2.BORDER_REFLECT_101,
                )
                r, g, bl, _ = cv2.mean(warped)
                cmat[i, :, 3] = gain[i] * (lr * r + lg * g + lb * bl)  # contrast around grey
                cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB, dst=warped3)
                im = cv2.transform(warped3, cmat[i], dst=rgb[i])  # saturating uint8 colour map
                if not (lowres[i] or blur[i] or jpeg[i]):
                    continue
                if lowres[i]:
                    small = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
                    im = cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)
                if blur[i]:
                    im = cv2.GaussianBlur(im, (7, 7), sigma[i], borderType=cv2.BORDER_REFLECT_101)
                if jpeg[i]:
                    bgr = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
                    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality[i]])
                    im = _decode_rgb(buf)
                rgb[i] = im

        threads = _cv2_threads() if threads is None else threads
        if threads > 1 and b >= 2 * threads:
            cuts = np.linspace(0, b, threads + 1).round().astype(int)
            pool = _thread_pool(threads)
            futures = [pool.submit(run, lo, hi) for lo, hi in zip(cuts[1:-1], cuts[2:])]
            run(cuts[0], cuts[1])  # this thread takes the first share
            for f in futures:
                f.result()
        else:
            run(0, b)
        res = np.empty((b, s, s, 3), dtype=np.float32)
        cv2.LUT(rgb.reshape(b * s, s, 3), _NORM_LUT, dst=res.reshape(b * s, s, 3))
        return torch.from_numpy(res).permute(0, 3, 1, 2)  # a channels_last NCHW tensor


def pixel_homography(warp: np.ndarray, w_in: int, s: int) -> np.ndarray:
    """Normalised (``align_corners=False``) output -> input homographies (B, 3, 3) as pixel
    maps from an ``s`` x ``s`` output to a ``w_in``-wide input (for ``cv2.warpPerspective``)."""
    to_norm = np.array([[2 / s, 0, 1 / s - 1], [0, 2 / s, 1 / s - 1], [0, 0, 1]])
    to_pixel = np.array([[w_in / 2, 0, (w_in - 1) / 2], [0, w_in / 2, (w_in - 1) / 2], [0, 0, 1]])
    return to_pixel @ warp @ to_norm


_STD, _MEAN = np.array(IMAGENET_STD), np.array(IMAGENET_MEAN)
_NORM_LUT = (np.arange(256)[:, None] / (255.0 * _STD) - _MEAN / _STD).astype(np.float32)
_NORM_LUT = _NORM_LUT.reshape(256, 1, 3)
"""uint8 value -> ImageNet-normalised float, per RGB channel (for ``cv2.LUT``)."""


_POOLS: dict = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's pool threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def _cv2_threads() -> int:
    """Threads for the CPU augmentation kernel: 2 where the process may use 2 or more cores,
    else 1 (measured on 2 cores only; the training step uses the machine's cores between
    batches anyway). ``MASKDET_CV2_THREADS`` overrides."""
    env = os.environ.get("MASKDET_CV2_THREADS")
    if env:
        return max(1, int(env))
    return 2 if usable_cores() >= 2 else 1


def _thread_pool(threads: int):
    """A process-wide pool of ``threads - 1`` helpers (the caller works too)."""
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads - 1, thread_name_prefix="maskdet-cv2")
    return pool


def _decode_rgb(buf: np.ndarray) -> np.ndarray:
    """Decode an encoded image straight to RGB (OpenCV >= 4.10), else via BGR."""
    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if flag is not None:
        return cv2.imdecode(buf, flag)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def center_crop_batch(x: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Val/test view of a cached uint8 batch: centre crop, normalise (the cache is already 128)."""
    h, w = x.shape[-2:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return _normalise(x[..., y0 : y0 + size, x0 : x0 + size].float())


_NORM_SCALE = tuple(1 / (255.0 * s) for s in IMAGENET_STD)
_NORM_SHIFT = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def _normalise(img: torch.Tensor) -> torch.Tensor:
    """0..255 RGB ``(B, 3, H, W)`` -> ImageNet-normalised, in one fused multiply-add."""
    scale = device_constant(_NORM_SCALE, img.device).view(1, 3, 1, 1)
    return torch.addcmul(device_constant(_NORM_SHIFT, img.device).view(1, 3, 1, 1), img, scale)
