"""Figures as a reader sees them (issue 17, part 6): epoch axes at whole epochs; in the image
grids no title over an image; photo figures saved as JPEG. Drawn from real lfw-mini faces."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maskdet.core.manifest import read_manifest  # noqa: E402
from maskdet.deploy import photos
from maskdet.evaluation import figures
from maskdet.synthesis import figures as synthesis_figures
from maskdet.training import figures as training_figures  # noqa: E402


def _metrics(epochs: list[int]) -> list[dict]:
    keys = ("train/loss", "val/loss", "train/acc", "val/acc", "val/auc", "train/lr")
    rng = np.random.default_rng(0)
    return [
        {"epoch": e, "train/images_per_s": 20.0, "train/data_wait_share": 0.1}
        | {k: float(rng.uniform(0.5, 1)) for k in keys}
        for e in epochs
    ]


def _ticks_shown(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


@pytest.mark.parametrize("epochs", [[1], [1, 2, 3], list(range(1, 51))])
def test_epoch_axes_tick_at_whole_epochs(epochs):
    fig = training_figures.training_curves(_metrics(epochs))
    for ax in fig.axes[:4]:
        assert ax.get_xlabel() == "epoch"
        ticks = _ticks_shown(ax)
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
    rng = np.random.default_rng(1)
    label = np.r_[np.ones(20), np.zeros(20)]
    preds = {e: {"label": label, "prob": rng.random(40)} for e in epochs}
    fig = figures.epoch_panels(preds, {e: 0.5 + e / 200 for e in epochs})
    ticks = _ticks_shown(fig.axes[1])  # AUC per epoch
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    bar = fig.axes[-1]  # the colour bar of the every-epoch ROC
    lo, hi = bar.get_ylim()
    shown = [t for t in bar.get_yticks() if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown), shown
    plt.close(fig)


def _titles_clear_of_images(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    for ax in fig.axes:
        for title in (ax.title, ax._left_title):
            if not title.get_text():
                continue
            box = title.get_window_extent(renderer)
            hits = [b for b in boxes if b.overlaps(box) and b.height * b.width > 0]
            assert not hits, f"title {title.get_text()!r} over an image"
    if fig._suptitle is not None:
        box = fig._suptitle.get_window_extent(renderer)
        assert not [b for b in boxes if b.overlaps(box)], "figure title over an image"
        labels = [ax._left_title.get_window_extent(renderer) for ax in fig.axes]
        assert not [b for b in labels if b.overlaps(box) and b.width > 1], "title over a label"


def test_mistake_gallery_and_colour_grid_titles_stay_off_the_images(masked_mini):
    rows = [r for r in read_manifest(masked_mini) if r["status"] == "ok"][:19]
    mistakes = [
        {"path": r["path"], "label": int(r["label"] == "wearing_mask"), "prob": 0.987} for r in rows
    ]
    fig = figures.mistakes_gallery(mistakes, masked_mini, title="test: most confident mistakes")
    _titles_clear_of_images(fig)
    plt.close(fig)
    for by in ("mask_color", "mask_type"):
        fig = synthesis_figures.sample_grid(masked_mini, by=by)
        _titles_clear_of_images(fig)
        plt.close(fig)


def test_photo_figures_are_shown_as_jpeg(masked_mini, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    shell.display_pub.publish = lambda data, **kw: shown.append(data)
    fig = synthesis_figures.sample_grid(masked_mini, by="mask_type")
    photos.show_jpeg(fig)
    assert len(shown) == 1 and "image/jpeg" in shown[0] and "image/png" not in shown[0]
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend shows no PNG of it
