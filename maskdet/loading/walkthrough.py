"""What notebooks 03 and 04 show of the package's own code: the source of a function as it
runs (the ``Dataset``, the ``DataLoader`` call, the model's head, the training step, saving and
loading), and a grid of one batch as the model receives it."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Code, display

from ..core.constants import CLASS_NAMES, ROOT
from .augment import denormalize
from .batch import Batch


def source_of(*objects) -> str:
    """The source of each function, method or class, under a comment naming its file."""
    parts = []
    for obj in objects:
        path = Path(inspect.getsourcefile(obj)).resolve()
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        code = textwrap.dedent(inspect.getsource(obj)).rstrip()
        parts.append(f"# {where}: {obj.__qualname__}\n{code}\n")
    return "\n".join(parts)


def show_source(*objects) -> None:
    """Display :func:`source_of` as highlighted Python (text where HTML is not shown)."""
    display(Code(source_of(*objects), language="python"))


def batch_grid(batch: Batch, n: int = 16, per_row: int = 8, title: str = ""):
    """The first ``n`` images of a normalised batch, as the model receives them (ImageNet
    normalisation undone for the eye), each with its label's class name."""
    n = min(n, len(batch.labels))
    per_row = max(1, min(per_row, n))
    rows = -(-n // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(1.5 * per_row, 1.75 * rows), squeeze=False)
    images = denormalize(batch.images[:n]).cpu()
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k].permute(1, 2, 0).numpy())
            label = int(batch.labels[k].item() > 0.5)
            ax.set_title(f"{label}: {CLASS_NAMES[label]}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
