"""Stage 03: the augmented 112x112 loader (per-image DataLoader and a cached, batched fast path).

Two ways to feed the model, one augmentation family (:class:`AugmentConfig`):

``dataloader``
    :class:`FaceDataset` reads each PNG with :func:`maskdet.imageio.read_rgb` in DataLoader worker
    processes and augments it with ``torchvision.transforms.v2`` (per image, on the CPU).
``cached``
    :func:`build_cache` decodes every image once into a ``uint8`` memory-mapped array in
    ``DATA_DIR/cache``; :class:`CachedLoader` slices whole batches from it and augments each
    batch at once (:class:`BatchAugment`, parameters drawn on the CPU per batch): on a GPU with
    tensor operations on the GPU-resident cache (one ``grid_sample`` for crop + flip + rotation,
    a batched colour matrix, down-up resampling, grouped-conv blur, :func:`jpeg_compress`),
    prepared ahead on a side stream; on a CPU with OpenCV's ``uint8`` kernels in two threads.

Train augmentations aim at real masks on real photos, not MaskTheFace's artefacts: random resized
crop (scale range) to 112, horizontal flip, small rotations, mild colour jitter, blur, low
resolution and JPEG quality. Val/test: deterministic resize to 128 and centre crop to 112.
Both use ImageNet normalisation. A bad or missing image is skipped and counted, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import LABELS
from .imageio import BadImage, read_rgb
from .manifest import read_manifest, usable

IMAGE_SIZE = 112
"""Network input side (pixels)."""
RESIZE_SIZE = 128
"""Val/test images are resized to this side, then centre-cropped to :data:`IMAGE_SIZE`."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = [name for name, _ in sorted(LABELS.items(), key=lambda kv: kv[1])]
"""Index = label: ``["not_wearing_mask", "wearing_mask"]``."""
CACHE_DIRNAME = "cache"


# ------------------------------------------------------------------------ augmentation


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
"""``none`` is the val/test view (centre 112 of 128) without randomness."""


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


def train_transform(aug: str | AugmentConfig = "default", size: int = IMAGE_SIZE):
    """Per-image train transform (torchvision v2) on a uint8 CHW tensor -> normalised float."""
    from torchvision.transforms import v2

    c = get_augment(aug)
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


def eval_transform(size: int = IMAGE_SIZE, resize: int = RESIZE_SIZE):
    """Deterministic val/test transform: resize the shorter side, centre crop, normalise."""
    from torchvision.transforms import v2

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
    from torchvision import tv_tensors

    return tv_tensors.Image(
        torch.from_numpy(np.array(rgb, copy=not rgb.flags.writeable)).permute(2, 0, 1)
    )


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Normalised float batch -> float in [0, 1] (for figures and TensorBoard)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(-1, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)


# ------------------------------------------------------------------------------ items


@dataclass(frozen=True)
class Item:
    path: str  # relative to DATA_DIR
    label: int


def select_rows(
    rows: list[dict[str, str]], split: str, limit: int | None = None, seed: int = 0
) -> list[Item]:
    """Usable rows of one split as items, sorted by path; ``limit`` keeps whole twin pairs.

    With a limit, pairs (a face and its masked twin) are ordered by a seeded hash and the first
    ones kept, so a small subset stays balanced between the classes and is the same every run.
    """
    rows = usable(rows, split)
    if limit is not None and limit < len(rows):
        by_pair: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by_pair.setdefault(r["pair_id"] or r["path"], []).append(r)
        order = sorted(by_pair, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        kept: list[dict[str, str]] = []
        for p in order:
            if len(kept) >= limit:
                break
            kept += by_pair[p]
        rows = kept[:limit]
    items = [Item(r["path"], LABELS[r["label"]]) for r in rows]
    return sorted(items, key=lambda it: it.path)


# ------------------------------------------------------------------ per-image dataset


@dataclass
class Skipped:
    """What a dataset returns instead of a sample when the image cannot be used."""

    index: int
    path: str
    reason: str


class FaceDataset(Dataset):
    """Faces of one split listed in the manifest (status ``ok``), read with :func:`read_rgb`.

    ``__getitem__`` returns ``(image, label, index)``; an unreadable or missing file gives a
    :class:`Skipped` record instead, which :func:`collate_skip` drops and reports.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        transform=None,
        limit: int | None = None,
        seed: int = 0,
        items: list[Item] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.split = split
        self.items = (
            items if items is not None else select_rows(read_manifest(data_dir), split, limit, seed)
        )
        self.transform = transform if transform is not None else eval_transform()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            rgb = read_rgb(self.data_dir / item.path)
        except BadImage as err:
            return Skipped(index, item.path, str(err))
        return self.transform(to_tensor_uint8(rgb)), item.label, index


@dataclass
class Batch:
    """A training batch: images (B,3,112,112 float), labels (B,), dataset indices (B,), skips."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[Skipped] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        return Batch(
            self.images.pin_memory(),
            self.labels.pin_memory(),
            self.indices.pin_memory(),
            self.skipped,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.indices,
            self.skipped,
        )


def collate_skip(samples: list) -> Batch:
    """Stack good samples; drop :class:`Skipped` ones but keep them in ``Batch.skipped``."""
    good = [s for s in samples if not isinstance(s, Skipped)]
    bad = [s for s in samples if isinstance(s, Skipped)]
    if not good:
        return Batch(
            torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE),
            torch.empty(0),
            torch.empty(0, dtype=torch.long),
            bad,
        )
    return Batch(
        torch.stack([torch.as_tensor(s[0]) for s in good]),
        torch.tensor([float(s[1]) for s in good]),
        torch.tensor([s[2] for s in good], dtype=torch.long),
        bad,
    )


def default_workers() -> int:
    """DataLoader workers sized to the machine: the usable cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(8, cores))


class SkipCounter:
    """Accumulates skipped images over the batches seen (``counts`` by reason, ``paths``)."""

    def __init__(self):
        self.paths: dict[str, str] = {}

    def add(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            self.paths[s.path] = s.reason

    @property
    def counts(self) -> Counter:
        return Counter(self.paths.values())

    def __len__(self) -> int:
        return len(self.paths)


class FaceLoader:
    """The per-image path: a DataLoader over :class:`FaceDataset` that yields :class:`Batch`es.

    Shuffling is seeded per epoch (``set_epoch``), so an epoch's order and augmentations are the
    same whether or not training was interrupted before it.
    """

    def __init__(
        self,
        dataset: FaceDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        workers: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
    ):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device(device)
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        self.skips = SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=g,
            num_workers=self.workers,
            collate_fn=collate_skip,
            pin_memory=cuda,
            drop_last=self.drop_last,
            persistent_workers=False,
            prefetch_factor=4 if self.workers else None,
        )
        for batch in loader:
            self.skips.add(batch.skipped)
            if len(batch.labels):
                yield batch.to(self.device, non_blocking=cuda)


# ------------------------------------------------------------------------ cached path


def _decode_for_cache(path: Path, side: int) -> tuple[np.ndarray | None, str]:
    try:
        rgb = read_rgb(path)
    except BadImage as err:
        return None, str(err)
    if rgb.shape[:2] != (side, side):
        h, w = rgb.shape[:2]
        s = min(h, w)
        rgb = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        interp = cv2.INTER_AREA if s > side else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (side, side), interpolation=interp)
    return rgb, ""


class _DecodeSet(Dataset):
    def __init__(self, data_dir: Path, items: list[Item], side: int):
        self.data_dir, self.items, self.side = data_dir, items, side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        arr, reason = _decode_for_cache(self.data_dir / self.items[i].path, self.side)
        return i, arr, reason


@dataclass
class ImageCache:
    """Decoded uint8 images ``(N, side, side, 3)`` of one split, memory-mapped from disk.

    ``valid[i]`` is False for an image that could not be read; ``skipped`` maps its path to the
    reason. ``items`` keeps the manifest order (sorted by path).
    """

    items: list[Item]
    images: np.ndarray
    valid: np.ndarray
    skipped: dict[str, str]
    path: Path | None = None

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.float32)


def _cache_key(data_dir: Path, items: list[Item], side: int) -> str:
    h = hashlib.sha256(f"v1:{side}".encode())
    for it in items:
        try:
            st = (data_dir / it.path).stat()
            h.update(f"{it.path}:{it.label}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{it.path}:{it.label}:missing\n".encode())
    return h.hexdigest()[:16]


def build_cache(
    data_dir: str | os.PathLike,
    split: str,
    limit: int | None = None,
    seed: int = 0,
    side: int = RESIZE_SIZE,
    workers: int | None = None,
    in_memory: bool = False,
    progress: bool = False,
) -> ImageCache:
    """Decode every usable image of a split once into ``DATA_DIR/cache/<split>-<key>.u8``.

    The key hashes the item list with sizes and modification times: changed data gives a new
    cache, an unchanged one is reused at once. ``in_memory`` keeps the array in RAM instead.
    """
    data_dir = Path(data_dir)
    items = select_rows(read_manifest(data_dir), split, limit, seed)
    key = _cache_key(data_dir, items, side)
    cache_dir = data_dir / CACHE_DIRNAME
    base = cache_dir / f"{split}-{key}"
    shape = (len(items), side, side, 3)
    meta_path = base.with_suffix(".json")
    if not in_memory and meta_path.exists() and base.with_suffix(".u8").exists():
        meta = json.loads(meta_path.read_text())
        images = np.memmap(base.with_suffix(".u8"), dtype=np.uint8, mode="r", shape=shape)
        valid = np.array(meta["valid"], dtype=bool)
        return ImageCache(items, images, valid, meta["skipped"], base.with_suffix(".u8"))
    if in_memory or not items:
        images = np.zeros(shape, dtype=np.uint8)
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = base.with_suffix(".u8.part")
        images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    valid = np.zeros(len(items), dtype=bool)
    skipped: dict[str, str] = {}
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _DecodeSet(data_dir, items, side),
        batch_size=32,
        num_workers=workers,
        collate_fn=lambda b: b,
    )
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=f"cache {split}", total=len(loader))
    for chunk in it:
        for i, arr, reason in chunk:
            if arr is None:
                skipped[items[i].path] = reason
            else:
                images[i] = arr
                valid[i] = True
    if in_memory or not items:
        return ImageCache(items, images, valid, skipped, None)
    images.flush()
    del images
    os.replace(base.with_suffix(".u8.part"), base.with_suffix(".u8"))
    meta_path.write_text(
        json.dumps(
            {
                "split": split,
                "side": side,
                "n": len(items),
                "valid": valid.tolist(),
                "skipped": skipped,
            }
        )
    )
    images = np.memmap(base.with_suffix(".u8"), dtype=np.uint8, mode="r", shape=shape)
    return ImageCache(items, images, valid, skipped, base.with_suffix(".u8"))


_CONSTS: dict = {}
_LUM = (0.299, 0.587, 0.114)


def _const(values: tuple, device: torch.device) -> torch.Tensor:
    """A small float constant on ``device``, made once per device: a fresh
    ``torch.tensor(..., device="cuda")`` is a blocking copy that waits for all queued GPU work,
    which would stop the host from running ahead of the GPU. Keyed by the tuple's identity
    (hashing the 64x64 DCT matrix on every call cost more than the operations using it); the
    entry keeps the tuple alive, so its identity cannot be reused."""
    key = (id(values), str(device))
    entry = _CONSTS.get(key)
    if entry is None or entry[0] is not values:
        entry = _CONSTS[key] = (values, torch.tensor(values, dtype=torch.float32, device=device))
    return entry[1]


def gaussian_taps(sigma: np.ndarray, ksize: int = 7) -> np.ndarray:
    """Normalised 1-D Gaussian kernels ``(B, ksize)`` for per-image ``sigma`` (B,)."""
    r = np.arange(ksize) - ksize // 2
    k = np.exp(-0.5 * (r[None] / np.asarray(sigma, dtype=np.float64)[:, None]) ** 2)
    return k / k.sum(1, keepdims=True)


# ---------------------------------------------------------------- JPEG as tensor operations

_JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_JPEG_CHROMA = (
    ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99))
    + (
        (24, 26, 56, 99, 99, 99, 99, 99),
        (47, 66, 99, 99, 99, 99, 99, 99),
    )
    + ((99,) * 8,) * 4
)
"""The JPEG standard's (Annex K) base quantisation tables, as libjpeg scales them by quality."""
_RGB2YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC2RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB2YCC)).tolist()))
_YCC2RGB_SHIFT = tuple(-128.0 * (r[1] + r[2]) for r in _YCC2RGB)
"""RGB offset of decoded chroma samples, stored around 128 (``Cb``, ``Cr`` minus 128)."""
_DCT8 = np.array(
    [
        [
            math.sqrt((1 if u == 0 else 2) / 8) * math.cos(math.pi * (2 * x + 1) * u / 16)
            for x in range(8)
        ]
        for u in range(8)
    ]
)
"""Orthonormal 8-point DCT-II matrix: JPEG's forward DCT of a block is ``D @ block @ D.T``."""
_DCT64 = tuple(map(tuple, np.kron(_DCT8, _DCT8).T.tolist()))
"""The 2-D block DCT as one 64x64 matrix on row-major flattened blocks: ``coef = block @ K``."""


def jpeg_tables(quality: np.ndarray) -> np.ndarray:
    """libjpeg's quantisation tables ``(B, 2, 64)`` (luma, chroma; row-major 8x8) for
    qualities 1..100."""
    q = np.clip(np.asarray(quality, dtype=np.float64), 1, 100)
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).reshape(-1, 1, 1)
    base = np.array([_JPEG_LUMA, _JPEG_CHROMA], dtype=np.float64).reshape(1, 2, 64)
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def _to_blocks(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> row-major flattened 8x8 blocks ``(B, C*H/8*W/8, 64)``."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, -1, 64)


def _from_blocks(blocks: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    b = blocks.shape[0]
    return blocks.reshape(b, c, h // 8, w // 8, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def _colour_map(x: torch.Tensor, matrix: tuple, shift: tuple) -> torch.Tensor:
    """``matrix @ pixel + shift`` for every pixel of ``(B, 3, H, W)`` ``x``, in one batched
    matrix product (a 1x1 convolution is several times slower on a CPU)."""
    b, c, h, w = x.shape
    m = _const(matrix, x.device).expand(b, c, c)
    out = torch.baddbmm(_const(shift, x.device).view(c, 1), m, x.reshape(b, c, h * w))
    return out.view(b, c, h, w)


def jpeg_with_tables(img: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG (4:2:0) of RGB ``img`` in 0..255, ``(B, 3, H, W)`` float, with per-image
    quantisation ``tables`` ``(B, 2, 64)`` (:func:`jpeg_tables`) on the image's device.

    The lossy steps of the codec are computed exactly, as batched tensor operations: 8-bit
    YCbCr, 2x2 chroma averaging, the 8x8 DCT of luma and chroma blocks together (one 64x64
    matrix product each way), quantisation, 8-bit decoded samples, bilinear ("fancy") chroma
    upsampling, RGB. Only the lossless entropy coding is left out. About 25 operations per
    batch, whatever its size (each one a kernel launch on a GPU)."""
    b, _, h, w = img.shape
    dev = img.device
    ph, pw = -h % 16, -w % 16
    x = img.round()  # the encoder sees 8-bit pixels
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hp, wp = h + ph, w + pw
    ycc = _colour_map(x, _RGB2YCC, (-128.0, 0.0, 0.0)).round()  # 8-bit, centred on 0
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    blocks = torch.cat([_to_blocks(ycc[:, :1]), _to_blocks(chroma)], 1)
    n_luma = hp * wp // 64
    table = torch.cat(
        [
            tables[:, :1].expand(b, n_luma, 64),
            tables[:, 1:].expand(b, blocks.shape[1] - n_luma, 64),
        ],
        1,
    )
    k = _const(_DCT64, dev)
    coef = torch.round(torch.matmul(blocks, k) / table) * table
    # inverse DCT, level shift back (+128 on every sample = +1024 on the DC coefficient)
    dec = torch.addmm(_const((128.0,), dev), coef.view(-1, 64), k.T).round_().clamp_(0, 255)
    dec = dec.view(b, -1, 64)
    y = _from_blocks(dec[:, :n_luma], 1, hp, wp)
    c = _from_blocks(dec[:, n_luma:], 2, hp // 2, wp // 2)
    c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False).round_()
    rgb = _colour_map(torch.cat([y, c], 1), _YCC2RGB, _YCC2RGB_SHIFT)
    return rgb.round_().clamp_(0, 255)[:, :, :h, :w]


def jpeg_compress(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG of RGB ``img`` in 0..255 (``(B, 3, H, W)`` float) at per-image ``quality``
    (libjpeg's tables): :func:`jpeg_with_tables`.

    Agrees with OpenCV's encoder + decoder to about half a grey level on average (the
    integer DCT's rounding), against 1.5-4 levels that the codec itself changes (tested)."""
    tables = jpeg_tables(quality.detach().cpu().numpy())
    return jpeg_with_tables(img, torch.from_numpy(tables).float().to(img.device))


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
        the batch's low-resolution side, blur sigmas and JPEG qualities.

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

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return {
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
        packed = np.concatenate([cols[k].reshape(b, n) for k, n in cls._PACKED], 1)
        t = torch.from_numpy(packed.astype(np.float32))
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        elif device.type != "cpu":
            t = t.to(device)
        out, i = {}, 0
        for k, n in cls._PACKED:
            out[k] = t[:, i : i + n]
            i += n
        return out

    def _apply_torch(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """The ``torch`` kernel: about 40 tensor operations per batch in all (each a kernel
        launch on a GPU, where the host's launch time, not the arithmetic, is the cost)."""
        dev, b, s = x.device, x.shape[0], self.size
        q = self._params_on(p, dev)
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
                cv2.warpAffine(
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
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def _thread_pool(threads: int):
    """A process-wide pool of ``threads - 1`` helpers (the caller works too)."""
    from concurrent.futures import ThreadPoolExecutor

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
    scale = _const(_NORM_SCALE, img.device).view(1, 3, 1, 1)
    return torch.addcmul(_const(_NORM_SHIFT, img.device).view(1, 3, 1, 1), img, scale)


class CachedLoader:
    """The fast path: batches sliced from an :class:`ImageCache`, augmented on ``device``.

    On a GPU the whole split's uint8 cache is copied to GPU memory once (when it takes under a
    quarter of the free memory; else each batch is gathered into pinned memory), and a
    background thread prepares the next batches on a side CUDA stream (gather, augmentation),
    ``GROUP`` batches per pass, while the model trains on the current one: nothing in that path
    waits for the GPU.
    On the CPU the OpenCV kernel reads the cache rows in place (no gather) in the calling
    process, two threads each taking half of the batch's images (OpenCV releases the GIL inside
    every call): 1.3-1.5x one thread on the 2-core machine; worker processes (fork per epoch,
    shipping 9.6 MB float batches) were slower. Every batch draws its augmentation from a CPU generator seeded by
    (seed, epoch, batch index), so a batch is the same whichever device augments it.
    ``augment=None`` gives the deterministic val/test view.
    """

    PREFETCH = 3
    """Batches prepared ahead on a GPU, beyond the group being handed out."""
    GROUP = 8
    """Batches the GPU's background thread augments in one pass (:meth:`_batch_group`)."""

    def __init__(
        self,
        cache: ImageCache,
        batch_size: int = 64,
        shuffle: bool = False,
        augment: str | AugmentConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        backend: str = "auto",
        prefetch: bool = True,
    ):
        self.cache, self.batch_size, self.shuffle = cache, batch_size, shuffle
        self.device = torch.device(device)
        self.augment = BatchAugment(augment, backend=backend) if augment is not None else None
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        self.prefetch = prefetch
        self.index = np.flatnonzero(cache.valid)
        self.labels = torch.from_numpy(cache.labels)
        self.skips = SkipCounter()
        self.skips.add([Skipped(-1, p, r) for p, r in cache.skipped.items()])
        self._on_device: tuple[torch.Tensor, torch.Tensor] | bool | None = None

    @property
    def dataset_items(self) -> list[Item]:
        return self.cache.items

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.index)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[np.ndarray]:
        idx = self.index
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        out = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def device_cache(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(images (N, side, side, 3) uint8, labels (N,))`` on the GPU, copied once; ``None``
        on the CPU or when the cache would take more than a quarter of the free GPU memory."""
        if self.device.type != "cuda":
            return None
        if self._on_device is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.cache.images.nbytes > free // 4:
                self._on_device = False  # decided once: gather into pinned memory instead
            else:
                images = torch.from_numpy(np.ascontiguousarray(self.cache.images))
                self._on_device = (images.to(self.device), self.labels.to(self.device))
        return self._on_device or None

    def _device_rows(self, sel: np.ndarray) -> torch.Tensor | None:
        """Cache rows ``sel`` as an index tensor on the GPU (one pinned copy), when the cache
        lives there."""
        if self.device_cache() is None:
            return None
        return torch.from_numpy(sel).pin_memory().to(self.device, non_blocking=True)

    def _gather(self, sel: np.ndarray, rows: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``(B, 3, side, side)`` of cache rows ``sel``: sliced on the GPU when the cache
        lives there (``rows``: ``sel`` already on the GPU), else read from the memmap in file
        order (pinned when going to a GPU)."""
        on_device = self.device_cache()
        if on_device is not None:
            rows = self._device_rows(sel) if rows is None else rows
            return on_device[0].index_select(0, rows).permute(0, 3, 1, 2)
        order = np.argsort(sel)  # read the memmap in file order, then restore the batch order
        arr = np.empty((len(sel),) + self.cache.images.shape[1:], dtype=np.uint8)
        arr[order] = self.cache.images[sel[order]]
        t = torch.from_numpy(arr).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            t = t.contiguous().pin_memory().to(self.device, non_blocking=True)
        return t

    def _generator(self, k: int) -> torch.Generator:
        """The (CPU) augmentation generator of batch ``k``, seeded by (seed, epoch, k)."""
        seed = int(np.random.SeedSequence([self.seed, self.epoch, k]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def _labels(self, sel: np.ndarray, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            return self.labels[sel].to(self.device, non_blocking=self.device.type == "cuda")
        return self.device_cache()[1].index_select(0, rows)

    def _batch_group(self, ks: list[int], sels: list[np.ndarray]) -> list[Batch]:
        """Batches ``ks`` of the epoch (cache rows ``sels``), each augmented with its own
        parameters (drawn from :meth:`_generator`).

        The CPU kernel reads the cache rows in place (no gather), batch by batch. The tensor
        kernel takes the whole group in one gather and one pass over all its images: on a GPU
        that pays the augmentation's kernel launches (about 40, a cost of the host) once per
        group instead of once per batch, with the same batches as one at a time (tested)."""
        if self.augment is not None and self.augment.kernel(self.device) == "cv2":
            out = []
            for k, sel in zip(ks, sels):
                p = self.augment.sample(len(sel), self._generator(k))
                images = self.augment.apply_cv2([self.cache.images[j] for j in sel], p)
                out.append(Batch(images, self._labels(sel, None), torch.from_numpy(sel)))
            return out
        sel = np.concatenate(sels)
        rows = self._device_rows(sel)
        u8, labels = self._gather(sel, rows), self._labels(sel, rows)
        if self.augment is None:
            images = center_crop_batch(u8)
        else:
            params = [self.augment.sample(len(s), self._generator(k)) for k, s in zip(ks, sels)]
            images = self.augment._apply_torch(u8, BatchAugment.merge(params))
        sizes = [len(s) for s in sels]
        return [
            Batch(x, y, torch.from_numpy(s))
            for x, y, s in zip(images.split(sizes), labels.split(sizes), sels)
        ]

    def _batch(self, k: int, sel: np.ndarray) -> Batch:
        return self._batch_group([k], [sel])[0]

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches()
        if self.device.type == "cuda" and self.prefetch:
            yield from self._prefetched(batches)
            return
        for k, sel in enumerate(batches):  # the CPU kernel reads the cache in place
            yield self._batch(k, sel)

    def _prefetched(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        """Batches prepared by a background thread, ``PREFETCH`` ahead. On a GPU it works on a
        side stream and the consumer's stream waits on each batch's event (no host
        synchronisation); the images are marked as used by the consumer's stream so that the
        allocator does not hand their memory out too early."""
        import contextlib
        import queue
        import threading

        cuda = self.device.type == "cuda"
        if cuda:
            self.device_cache()  # the one-off upload happens here, not inside the timed loop
            side = torch.cuda.Stream(self.device)
        ready: queue.Queue = queue.Queue(self.PREFETCH + self.GROUP)
        stop = threading.Event()

        def produce() -> None:
            try:
                with contextlib.ExitStack() as ctx:
                    if cuda:
                        ctx.enter_context(torch.cuda.device(self.device))
                        ctx.enter_context(torch.cuda.stream(side))
                    for start in range(0, len(batches), self.GROUP):
                        if stop.is_set():
                            return
                        ks = list(range(start, min(start + self.GROUP, len(batches))))
                        group, done = self._batch_group(ks, [batches[k] for k in ks]), None
                        if cuda:
                            done = torch.cuda.Event()
                            done.record(side)
                        for batch in group:
                            ready.put((batch, done))
                ready.put(None)
            except BaseException as e:  # handed to the consumer, raised there
                ready.put(e)

        worker = threading.Thread(target=produce, name="maskdet-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, done = item
                if done is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(done)
                    batch.images.record_stream(stream)
                    batch.labels.record_stream(stream)
                yield batch
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()


# ----------------------------------------------------------------------------- factory


def make_loaders(
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    mode: str = "cached",
    aug: str | AugmentConfig = "default",
    workers: int | None = None,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    val_limit: int | None = None,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, FaceLoader | CachedLoader]:
    """Loaders for the splits: train shuffled and augmented, val/test deterministic.

    ``mode``: ``cached`` (decode once, augment batches on ``device``) or ``dataloader``
    (per-image transforms in ``workers`` processes). ``limit``/``val_limit`` cap the images
    per split (whole twin pairs, seeded). Train drops a last partial batch only when it has
    fewer than 2 images (BatchNorm needs 2).
    """
    if mode not in ("cached", "dataloader"):
        raise ValueError(f"loader mode must be 'cached' or 'dataloader', not {mode!r}")
    rows = read_manifest(data_dir)
    out: dict = {}
    for split in splits:
        lim = limit if split == "train" else (val_limit if val_limit is not None else limit)
        train = split == "train"
        items = select_rows(rows, split, lim, seed)
        drop_last = train and len(items) % batch_size == 1
        if mode == "cached":
            cache = build_cache(data_dir, split, lim, seed, workers=workers)
            out[split] = CachedLoader(
                cache,
                batch_size,
                shuffle=train,
                augment=aug if train else None,
                device=device,
                seed=seed,
                drop_last=drop_last,
            )
        else:
            tf = train_transform(aug) if train else eval_transform()
            ds = FaceDataset(data_dir, split, tf, items=items)
            out[split] = FaceLoader(
                ds,
                batch_size,
                shuffle=train,
                workers=workers,
                device=device,
                seed=seed,
                drop_last=drop_last,
            )
    return out


def loader_items(loader: FaceLoader | CachedLoader) -> list[Item]:
    """The items a loader's ``Batch.indices`` refer to."""
    return loader.cache.items if isinstance(loader, CachedLoader) else loader.dataset.items


# ------------------------------------------------------------------------------ figures


def augmented_grid(
    data_dir: str | os.PathLike,
    n_per_class: int = 8,
    aug: str | AugmentConfig = "default",
    mode: str = "cached",
    split: str = "train",
    seed: int = 0,
    repeats: int = 1,
):
    """A matplotlib figure: originals and augmented training views of both classes.

    Rows: for each class, the original (centre crop) and ``repeats`` augmented views of the same
    ``n_per_class`` faces (masked row and unmasked row are twins where both exist).
    """
    import matplotlib.pyplot as plt

    rows = read_manifest(data_dir)
    items = select_rows(rows, split)
    by_pair: dict[str, dict[int, Item]] = {}
    pair_of = {r["path"]: r["pair_id"] for r in usable(rows, split)}
    for it in items:
        by_pair.setdefault(pair_of.get(it.path, it.path), {})[it.label] = it
    pairs = [p for p in sorted(by_pair) if len(by_pair[p]) == 2] or sorted(by_pair)
    rng = np.random.default_rng(seed)
    chosen = [
        pairs[i]
        for i in sorted(rng.choice(len(pairs), min(n_per_class, len(pairs)), replace=False))
    ]
    data_dir = Path(data_dir)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tf = train_transform(aug)
    batch_aug = BatchAugment(aug)
    grid_rows, row_names = [], []
    for label in (1, 0):
        pics = [by_pair[p].get(label) for p in chosen]
        raws = [
            to_tensor_uint8(_decode_for_cache(data_dir / it.path, RESIZE_SIZE)[0])
            if it
            else torch.zeros(3, RESIZE_SIZE, RESIZE_SIZE, dtype=torch.uint8)
            for it in pics
        ]
        u8 = torch.stack([torch.as_tensor(r) for r in raws])
        grid_rows.append(denormalize(center_crop_batch(u8)))
        row_names.append(f"{CLASS_NAMES[label]}\noriginal")
        for _ in range(repeats):
            if mode == "cached":
                aug_x = batch_aug(u8, g)
            else:
                aug_x = torch.stack([tf(r) for r in raws])
            grid_rows.append(denormalize(aug_x))
            row_names.append(f"{CLASS_NAMES[label]}\naugmented ({mode})")
    nr, nc = len(grid_rows), len(chosen)
    fig, axes = plt.subplots(nr, nc, figsize=(1.3 * nc + 1.2, 1.35 * nr), squeeze=False)
    for r in range(nr):
        for col in range(nc):
            ax = axes[r][col]
            ax.imshow(grid_rows[r][col].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(row_names[r], fontsize=7)
    fig.suptitle(f"Train augmentations ({mode} path), {IMAGE_SIZE}x{IMAGE_SIZE} inputs")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- benchmark


def baseline_imagefolder_loader(
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    workers: int | None = None,
    split: str = "train",
) -> DataLoader:
    """The reference point: ``torchvision.datasets.ImageFolder`` + PIL transforms, same family
    as far as PIL transforms go (rotation, resized crop, flip, colour jitter, blur)."""
    from torchvision import datasets
    from torchvision import transforms as T

    c = AugmentConfig()
    tf = T.Compose(
        [
            T.RandomRotation(c.rotate_deg, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomResizedCrop(IMAGE_SIZE, scale=c.scale, ratio=c.ratio),
            T.RandomHorizontalFlip(c.hflip),
            T.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue),
            T.RandomApply([T.GaussianBlur(7, sigma=c.blur_sigma)], p=c.blur_p),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    ds = datasets.ImageFolder(str(Path(data_dir) / split), transform=tf)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=default_workers() if workers is None else workers,
    )


def _throughput(loader, batches: int, device: torch.device, warmup: int = 1) -> float:
    """Images/s over ``batches`` batches (after ``warmup``), cycling the loader as needed.

    Each epoch's iterator is closed before returning, so that DataLoader workers still
    prefetching do not steal CPU from the next measurement."""
    n = seen = 0
    t0 = None
    epoch = 0
    elapsed = 0.0
    while seen < batches + warmup:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        it = iter(loader)
        try:
            for b in it:
                x = b.images if isinstance(b, Batch) else b[0]
                if device.type == "cuda":  # synchronised only where the clock is read
                    x = x.to(device, non_blocking=True)
                seen += 1
                if seen == warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                elif seen > warmup:
                    n += x.shape[0]
                if seen >= batches + warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    elapsed = time.perf_counter() - t0
                    break
        finally:
            shutdown = getattr(it, "_shutdown_workers", None) or getattr(it, "close", None)
            if shutdown:
                shutdown()
            del it
        epoch += 1
    return n / elapsed


def _bench_data(args) -> Path:
    if getattr(args, "data", None):
        return Path(args.data)
    from .data import download_and_prepare

    source = getattr(args, "source", None) or "../shared/data/lfw-deepfunneled.tgz"
    n_id = max(3, (getattr(args, "images", None) or 200) // 2)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskdet-bench-loader-{n_id}"
    if not (out / "manifest.csv").exists():
        download_and_prepare(source, out, limit_identities=n_id, progress=False)
        try:
            from .synthesis import synthesize_dataset

            synthesize_dataset(out, backend="builtin")
        except ImportError:
            pass
    return out


def benchmark(args) -> dict:
    """``python -m maskdet bench loader``: augmented 112x112 images/s at batch 64, side by side.

    The three loaders are measured in turn, ``rounds`` times (default 3), and the median of
    each is reported: on a shared VM a single short run can be off by a third.
    """
    data_dir = _bench_data(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = args.batches or 30
    rounds = getattr(args, "rounds", None) or 3
    workers = default_workers()
    n_train = len(select_rows(read_manifest(data_dir), "train"))
    print(
        f"data {data_dir}: {n_train} train images; device {device}; {workers} workers; "
        f"{batches} batches of 64 after 1 warm-up, {rounds} rounds; "
        f"torch threads {torch.get_num_threads()}"
    )
    loaders = {
        "baseline ImageFolder+PIL": baseline_imagefolder_loader(data_dir, 64, workers),
        "default loader (dataloader, v2)": make_loaders(
            data_dir, 64, mode="dataloader", workers=workers, device=device, splits=("train",)
        )["train"],
    }
    t = time.perf_counter()
    loaders["cached (batch aug on " + device.type + ")"] = make_loaders(
        data_dir, 64, mode="cached", workers=workers, device=device, splits=("train",)
    )["train"]
    build_s = time.perf_counter() - t
    runs: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, ld in loaders.items():
            runs[name].append(_throughput(ld, batches, device))
    results = {name: float(np.median(v)) for name, v in runs.items()}
    ref = results["baseline ImageFolder+PIL"]
    print(f"{'loader':40s} {'images/s':>10s} {'x baseline':>11s}  rounds")
    for name, v in results.items():
        each = ", ".join(f"{r:.0f}" for r in runs[name])
        print(f"{name:40s} {v:10.0f} {v / ref:10.1f}x  {each}")
    print(f"cache build/open: {build_s:.1f} s (once per data version; reused afterwards)")
    return {"images_per_s": results, "rounds": runs, "cache_build_s": build_s}


__all__ = [
    "IMAGE_SIZE",
    "RESIZE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLASS_NAMES",
    "AugmentConfig",
    "AUGMENT_PRESETS",
    "get_augment",
    "train_transform",
    "eval_transform",
    "denormalize",
    "Item",
    "select_rows",
    "Skipped",
    "FaceDataset",
    "Batch",
    "collate_skip",
    "default_workers",
    "SkipCounter",
    "FaceLoader",
    "ImageCache",
    "build_cache",
    "BatchAugment",
    "jpeg_compress",
    "jpeg_with_tables",
    "center_crop_batch",
    "CachedLoader",
    "make_loaders",
    "loader_items",
    "augmented_grid",
    "baseline_imagefolder_loader",
    "benchmark",
]


def check_stage02(data_dir: str | os.PathLike) -> dict[str, Counter]:
    """For a notebook started on its own: usable images per split and class, or an error that
    names the stage to run first (01_download for no faces, 02_mask_synthesis for no masks)."""
    rows = read_manifest(data_dir)  # names stage 01 when there is no manifest
    ok = usable(rows)
    if not any(r["label"] == "not_wearing_mask" for r in ok):
        raise RuntimeError(f"{data_dir} has no faces yet: run 01_download first")
    if not any(r["label"] == "wearing_mask" for r in ok):
        raise RuntimeError(
            f"{data_dir} has no masked faces yet: run stage 02 first "
            "(notebook 02_mask_synthesis or `python -m maskdet synthesize`)"
        )
    return {
        split: Counter(r["label"] for r in ok if r["split"] == split)
        for split in ("train", "val", "test")
    }


__all__ += ["check_stage02"]
