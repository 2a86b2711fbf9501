"""Stage 03's figure (matplotlib): what the network sees, originals beside augmented views."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..core.constants import CLASS_NAMES, FACE_SIZE, IMAGE_SIZE
from ..core.manifest import Item, read_manifest, select_rows, usable
from .augment import BatchAugment, center_crop_batch, denormalize, to_tensor_uint8, train_transform
from .augment_presets import AugmentConfig
from .cache import read_face

# ------------------------------------------------------ stage 03: what the network sees


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
            to_tensor_uint8(read_face(data_dir / it.path)[0])
            if it
            else torch.zeros(3, FACE_SIZE, FACE_SIZE, dtype=torch.uint8)
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
