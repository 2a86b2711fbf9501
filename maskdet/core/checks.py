"""Each stage's input check, for a notebook started on its own: what the stage needs, or a
one-line error that names the stage to run first."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .constants import LABELS, SPLITS
from .manifest import read_manifest, usable


def check_stage01(data_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Stages 02-03: the manifest with faces from stage 01, or an error naming 01_download."""
    rows = read_manifest(data_dir)  # names stage 01 when there is no manifest
    if not any(r["label"] == "not_wearing_mask" and r["status"] == "ok" for r in rows):
        raise RuntimeError(f"{data_dir} has no faces yet: run 01_download first")
    return rows


def check_stage02(data_dir: str | os.PathLike) -> dict[str, Counter]:
    """Stages 03-04: usable images per split and class, or an error that names the stage to run
    first (01_download for no faces, 02_mask_synthesis for no masks)."""
    ok = usable(check_stage01(data_dir))
    if not any(r["label"] == "wearing_mask" for r in ok):
        raise RuntimeError(
            f"{data_dir} has no masked faces yet: run stage 02 first "
            "(notebook 02_mask_synthesis or `python -m maskdet synthesize`)"
        )
    return {split: Counter(r["label"] for r in ok if r["split"] == split) for split in SPLITS}


def check_both_classes(
    counts: dict[str, Counter], splits: tuple[str, ...] = ("train", "val")
) -> dict[str, Counter]:
    """Training's input check: each of ``splits`` holds usable faces of both classes (a model
    trained or chosen on one class learns nothing and its AUC means nothing), else a one-line
    error naming the split and its counts. ``counts``: those of :func:`check_stage02`."""
    for split in splits:
        have = counts.get(split, Counter())
        if not all(have[label] for label in LABELS):
            found = ", ".join(f"{have[label]} {label}" for label in LABELS)
            raise RuntimeError(
                f"the {split} split has {found} faces: training needs both classes in train "
                "and val; run stage 02 again (notebook 02_mask_synthesis or `python -m maskdet "
                "synthesize`), or stage 01 with more people"
            )
    return counts


def check_stage04(run_dir: str | os.PathLike, checkpoint: str = "best.pt") -> Path:
    """Stages 05-06: the trained checkpoint, or an error naming stage 04."""
    path = Path(run_dir) / checkpoint
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: train first (notebook 04_train_resnet50 or `python -m maskdet train`)"
        )
    return path


def check_photos(folder: str | os.PathLike) -> Path:
    """Stage 06: a folder of photos, or an error that says how to give one."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: set PHOTOS_DIR, or UPLOAD = True on Colab"
        )
    return path


def real_set_or_none(real_dir: str | os.PathLike | None) -> str | None:
    """``real_dir`` when it holds a real set (``mask/`` and ``nomask/`` folders or a
    ``labels.csv``), else None with a one-line note (on Colab there is no ``../shared``)."""
    p = Path(real_dir) if real_dir else None
    if p and ((p / "labels.csv").is_file() or ((p / "mask").is_dir() and (p / "nomask").is_dir())):
        return str(p)
    print(f"no real set at {real_dir!r}: training without the per-epoch real-face check")
    return None
