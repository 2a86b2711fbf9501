"""TensorBoard's scalars read back from a run's event files (``RUN_DIR/tb``) and plotted.

Notebook 04 draws them after training, so the saved notebook and the report show what
TensorBoard holds (live ``%tensorboard`` exists only on Colab). The event files are read with
TensorBoard's own reader (``tensorboard.backend.event_processing``), not from ``metrics.csv``:
the figure is evidence that the TensorBoard sink wrote them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TB_PANELS: dict[str, tuple[str, ...]] = {
    "loss": ("train/loss", "val/loss"),
    "accuracy and ROC AUC": ("train/acc", "val/acc", "val/auc", "real/auc"),
    "learning rate (end of epoch)": ("train/lr",),
}
"""The figure's panels: a title and the scalar tags drawn in it (those the run has)."""


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the event files of ``log_dir`` (not its subfolders, such as the
    ``hparams`` run) as ``(step, value)`` pairs in step order; ``{}`` when there are none."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]
    }


def scalars_figure(log_dir: str | os.PathLike, panels: dict[str, tuple[str, ...]] = TB_PANELS):
    """A figure of the TensorBoard scalars in ``log_dir`` (one panel per entry of ``panels``,
    x: epoch, numbered from 1 as the steps are), or None with one line saying why."""
    scalars = read_scalars(log_dir)
    shown = {title: [t for t in tags if t in scalars] for title, tags in panels.items()}
    shown = {title: tags for title, tags in shown.items() if tags}
    if not shown:
        print(f"TensorBoard: no scalars in {log_dir} (was the run trained with tensorboard on?)")
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.4), squeeze=False)
    for ax, (title, tags) in zip(axes[0], shown.items()):
        for tag in tags:
            steps, values = zip(*scalars[tag])
            ax.plot(steps, values, marker="o", label=tag)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        epochs = sorted({step for tag in tags for step, _ in scalars[tag]})
        if len(epochs) <= 12:  # every epoch a tick (whole numbers, as TensorBoard's steps)
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"TensorBoard scalars read back from the event files in {log_dir}")
    fig.tight_layout()
    return fig
