"""``python -m maskdet bench loader``: augmented 112x112 images/s at batch 64, side by side with
``torchvision.datasets.ImageFolder`` + PIL transforms."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from ..core.constants import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from ..core.manifest import read_manifest, select_rows
from ..core.system import default_workers, resolve_device
from ..loading.augment_presets import AugmentConfig
from ..loading.loader import make_loaders
from .common import in_turns, masked_data, throughput


def baseline_imagefolder_loader(
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    workers: int | None = None,
    split: str = "train",
) -> DataLoader:
    """The reference point: ``torchvision.datasets.ImageFolder`` + PIL transforms, same family
    as far as PIL transforms go (rotation, resized crop, flip, colour jitter, blur)."""
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


def bench_loader(
    data: str | None = None,
    source: str | None = None,
    images: int = 200,
    device: str | None = None,
    batches: int | None = None,
    rounds: int | None = None,
) -> dict:
    """The three loaders measured in turn, ``rounds`` times (default 3), and the median of each
    reported: on a shared VM a single short run can be off by a third. ``data``: a DATA_DIR
    (default: about ``images`` faces from ``source``, masked by the builtin renderer)."""
    data_dir = masked_data(data, source, images)
    dev = resolve_device(device)
    batches = batches or 30
    rounds = rounds or 3
    workers = default_workers()
    n_train = len(select_rows(read_manifest(data_dir), "train"))
    print(
        f"data {data_dir}: {n_train} train images; device {dev}; {workers} workers; "
        f"{batches} batches of 64 after 1 warm-up, {rounds} rounds; "
        f"torch threads {torch.get_num_threads()}"
    )
    loaders = {
        "baseline ImageFolder+PIL": baseline_imagefolder_loader(data_dir, 64, workers),
        "default loader (dataloader, v2)": make_loaders(
            data_dir, 64, mode="dataloader", workers=workers, device=dev, splits=("train",)
        )["train"],
    }
    t = time.perf_counter()
    loaders["cached (batch aug on " + dev.type + ")"] = make_loaders(
        data_dir, 64, mode="cached", workers=workers, device=dev, splits=("train",)
    )["train"]
    build_s = time.perf_counter() - t
    runs = in_turns(
        {name: (lambda r, ld=ld: throughput(ld, batches, dev)) for name, ld in loaders.items()},
        rounds,
    )
    results = {name: float(np.median(v)) for name, v in runs.items()}
    ref = results["baseline ImageFolder+PIL"]
    print(f"{'loader':40s} {'images/s':>10s} {'x baseline':>11s}  rounds")
    for name, v in results.items():
        each = ", ".join(f"{r:.0f}" for r in runs[name])
        print(f"{name:40s} {v:10.0f} {v / ref:10.1f}x  {each}")
    print(f"cache build/open: {build_s:.1f} s (once per data version; reused afterwards)")
    return {"images_per_s": results, "rounds": runs, "cache_build_s": build_s}
