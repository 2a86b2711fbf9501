"""Stage 01's figure (matplotlib): the stored crop and the loader's centre crop on the aligned
source.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from ..core.constants import FACE_SIZE, IMAGE_SIZE
from ..core.imageio import decode_rgb
from ..core.manifest import read_manifest
from .data import CROP_FRACTION


def framing_figure(data_dir: str | os.PathLike, n: int = 6, loader_crop: int = IMAGE_SIZE):
    """Original aligned images with the stored crop drawn, and the stored crops with the
    loader's centre crop drawn: shows that the 112x112 input holds the whole face."""
    data_dir = Path(data_dir)
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["status"] == "ok" and r["label"] == "not_wearing_mask"
    ][:n]
    raw = (
        next((p for p in (data_dir / "raw").glob("*_extracted")), None)
        if (data_dir / "raw").exists()
        else None
    )
    fig, axes = plt.subplots(2, len(rows), figsize=(2 * len(rows), 4.3), squeeze=False)
    for i, r in enumerate(rows):
        crop = np.asarray(Image.open(data_dir / r["path"]))
        src = None
        if raw is not None:
            cand = raw / r["source"]
            if cand.exists():
                src = decode_rgb(cand.read_bytes())
        ax = axes[0, i]
        if src is not None:
            h, w = src.shape[:2]
            side = round(min(h, w) * CROP_FRACTION)
            ax.imshow(src)
            ax.add_patch(
                Rectangle(
                    ((w - side) / 2, (h - side) / 2), side, side, fill=False, ec="lime", lw=1.5
                )
            )
        ax.set_title(r["identity"][:16], fontsize=8)
        ax.axis("off")
        ax = axes[1, i]
        ax.imshow(crop)
        m = (FACE_SIZE - loader_crop) / 2
        ax.add_patch(Rectangle((m, m), loader_crop, loader_crop, fill=False, ec="orange", lw=1.5))
        ax.axis("off")
    axes[0, 0].text(-10, 125, "aligned\nsource", ha="right", va="center", fontsize=9)
    axes[1, 0].text(-10, 64, f"stored\n{FACE_SIZE}px", ha="right", va="center", fontsize=9)
    fig.suptitle(
        f"green: stored crop ({CROP_FRACTION:.0%} of the shorter side); "
        f"orange: the loader's {loader_crop}x{loader_crop} centre crop",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
