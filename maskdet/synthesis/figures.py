"""Stage 02's figure (matplotlib): masked samples by mask type or colour, hard negatives by kind."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from ..core.imageio import read_rgb
from ..core.manifest import read_manifest

# ------------------------------------------------------------- stage 02: masked samples


def sample_grid(
    data_dir: str | os.PathLike,
    per_row: int = 8,
    by: str = "mask_type",
    label: str = "wearing_mask",
):
    """One row of samples per value of ``by``: masked faces by mask_type / mask_color, or with
    ``label="not_wearing_mask", by="occluder"`` the hard negatives by kind."""
    rows = [
        r
        for r in read_manifest(data_dir)
        if r["label"] == label and r["status"] == "ok" and (label == "wearing_mask" or r[by])
    ]
    if not rows:
        what = "masked faces" if label == "wearing_mask" else f"{label} images with a {by}"
        raise RuntimeError(f"{data_dir} has no {what}: run synthesize first")
    groups: dict[str, list[dict[str, str]]] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        groups.setdefault(r[by] or "?", []).append(r)
    names = sorted(groups)
    size = (per_row * 1.3, len(names) * 1.45 + 0.3)  # constrained: the title above the labels
    fig, axes = plt.subplots(len(names), per_row, figsize=size, squeeze=False, layout="constrained")
    for i, name in enumerate(names):
        picks = groups[name][:: max(1, len(groups[name]) // per_row)][:per_row]
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(picks):
                ax.imshow(read_rgb(Path(data_dir) / picks[j]["path"]))
        axes[i][0].set_title(f"{name} ({len(groups[name])})", fontsize=8, loc="left")
    fig.suptitle(f"{'masked' if label == 'wearing_mask' else label} samples by {by}", fontsize=10)
    return fig
