"""The train augmentation family applied per image and per batch, and the val/test view.

Settings and presets: :mod:`maskdet.loading.augment_presets` (:class:`AugmentConfig`, both loaders read
it). Per image (the ``dataloader`` path): :func:`train_transform` with
``torchvision.transforms.v2``. Per batch (the ``cached`` path): :class:`BatchAugment` draws every
random parameter of a batch on the CPU, then applies them with tensor operations on the batch's
device (one ``grid_sample`` for crop + flip + rotation, a batched colour matrix, down-up
resampling, grouped-conv blur, :func:`maskdet.loading.jpeg.jpeg_with_tables`) or, on a CPU, with OpenCV's
``uint8`` kernels in two threads. The pose and framing levers' homographies:
:mod:`maskdet.loading.augment_warps`.

Train augmentations aim at real masks on real photos, not MaskTheFace's artefacts: random resized
crop (scale range) to 112, horizontal flip, small rotations, mild colour jitter, blur, low
resolution and JPEG quality. Val/test: deterministic resize to 128 and centre crop to 112.
Both use ImageNet normalisation.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..core.constants import FACE_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from ..core.system import device_constant, usable_cores
from .augment_presets import AugmentConfig, get_augment
from .augment_warps import lever_warps, pixel_homography
from .jpeg import jpeg_tables, jpeg_with_tables


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
                levers["warp"] = lever_warps(c, self.size, crop, v[1:11], n)

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
