"""Real faces for measuring (never for training): a folder of real masked and unmasked crops.

The measure of the product is real masks on real faces, so every quality number is reported
beside one measured on real crops such as ``../shared/realdev/``: ``mask/`` (label 1,
``wearing_mask``) and ``nomask/`` (label 0) folders, or a ``labels.csv`` with ``path,label``
rows. Unreadable files are recorded with the reason, never fatal; a set with one class missing
is refused with a clear error (an AUC needs both).

A ``worn/`` folder beside them (realdev's: masks worn under the nose, on the chin, or wrong in
another way; ``worn/labels.csv`` gives each crop's ``category``) is read when asked for
(``read_real_set(..., worn=True)``, as ``evaluate --real`` does): those faces are in neither class
of the binary ROC and are reported on their own (:func:`maskdet.evaluation.worn.worn_wrong_report`).

Real crops come at one framing (realdev: a square of 1.5x the annotated face box);
:func:`reframe` makes tighter and looser framings of the same faces, so that a model can be
checked on both tight kiosk crops and loose phone crops. :func:`describe` gives what the error
analysis groups by: the colour and brightness of the lower face, and sharpness (real crops
cut from small faces are blurry: a proxy for the face's size in its photo).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .guard import UnsafeFile, check_regular
from .imageio import BadImage, is_image_name, read_rgb
from .metrics import auc_or_nan, threshold_metrics
from .system import autocast

CLASS_DIRS = {"mask": 1, "nomask": 0}
"""Folder names of the two classes (also accepted: the label names themselves)."""
LABEL_DIRS = {"wearing_mask": 1, "not_wearing_mask": 0}
NATIVE_FRAMING = 1.5
"""realdev crops are squares of 1.5x the annotated face box."""
FRAMINGS = {"tight": 1.0, "close": 1.25, "native": 1.5, "loose": 2.0}
"""Framings reported (multiples of the face box): tight kiosk crops to loose phone crops."""
SIDE = 128
WORN_DIR = "worn"
"""The folder of a real set that holds masks worn wrong (in neither class of the binary ROC)."""
UNCATEGORISED = "uncategorised"
"""The category of a ``worn/`` crop when the folder has no ``labels.csv``."""
SHOW_SKIPPED = 5
"""Files of ``worn/`` named in the one line about what could not be read (the rest: counted)."""


@dataclass
class RealSet:
    """Readable real crops with labels (1 = wearing_mask), and what could not be read; with
    ``worn=True``, the readable crops of ``worn/`` (paths ``worn/<file>``) and their category."""

    root: Path
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    has_worn: bool = False
    worn_paths: list[str] = field(default_factory=list)
    worn_categories: list[str] = field(default_factory=list)
    worn_images: list[np.ndarray] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {
            "wearing_mask": int(sum(self.labels)),
            "not_wearing_mask": len(self.labels) - int(sum(self.labels)),
            "skipped": len(self.skipped),
        }
        if self.has_worn:
            out["worn_wrong"] = len(self.worn_paths)
        return out


LABELS_MAX_BYTES = 64 << 20
"""A real set's ``labels.csv`` larger than this is refused before it is read."""


def _open_labels(csv_path: Path):
    """``csv_path`` opened for reading once ``stat`` says it is a regular file of at most
    :data:`LABELS_MAX_BYTES` (a FIFO or a link to a device would hang the read); ValueError
    naming it otherwise."""
    try:
        check_regular(csv_path, LABELS_MAX_BYTES, "labels.csv")
    except UnsafeFile as err:
        raise ValueError(f"{csv_path}: {err}") from None
    return open(csv_path, newline="", encoding="utf-8")


def _listing(root: Path) -> list[tuple[str, int]]:
    """(path relative to the set's folder, label) for every file of a real set: the rows of
    ``labels.csv`` when there is one, else every file under the class folders."""
    csv_path = root if root.suffix == ".csv" else root / "labels.csv"
    if csv_path.is_file() or csv_path.is_symlink() or csv_path.is_fifo():
        with _open_labels(csv_path) as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{csv_path}: needs the columns path,label (label 1 = mask)")
            out = []
            for line, row in enumerate(reader, 2):
                label = row["label"].strip()
                if label not in ("0", "1", *LABEL_DIRS):
                    raise ValueError(f"{csv_path} line {line}: label {label!r} is not 0 or 1")
                out.append(
                    (row["path"], LABEL_DIRS.get(label, int(label) if label.isdigit() else 0))
                )
            return out
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder (expected mask/ and nomask/ folders, or a labels.csv)"
        )
    names = {**CLASS_DIRS, **LABEL_DIRS}
    return [
        (f.relative_to(root).as_posix(), names[sub.name])
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name in names)
        for f in sorted(sub.rglob("*"))
        if f.is_file()
    ]


def _worn_listing(base: Path, skipped: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(``worn/<file>``, category) for every crop of ``base/worn/``: the rows of
    ``worn/labels.csv`` (columns path,category; paths relative to ``worn/``) when there is one,
    else every file (category :data:`UNCATEGORISED`). Image files that the ``labels.csv`` does not
    name are recorded in ``skipped`` (they have no category), never dropped in silence."""
    folder = base / WORN_DIR
    csv_path = folder / "labels.csv"
    files = sorted(
        f.relative_to(base).as_posix() for f in folder.rglob("*") if f.is_file() and f != csv_path
    )
    if not (csv_path.is_file() or csv_path.is_symlink() or csv_path.is_fifo()):
        return [(rel, UNCATEGORISED) for rel in files]
    with _open_labels(csv_path) as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "category"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: needs the columns path,category (e.g. nose_out, chin)")
        out = [
            (f"{WORN_DIR}/{row['path']}", (row["category"] or "").strip() or UNCATEGORISED)
            for row in reader
        ]
    listed = {rel for rel, _ in out}
    skipped.extend(
        {"path": rel, "reason": f"not in {WORN_DIR}/labels.csv (no category)"}
        for rel in files
        if rel not in listed and is_image_name(rel)
    )
    return out


def _read_listed(
    base: Path,
    listing: list[tuple[str, int | str]],
    limit: int | None,
    skipped: list[dict[str, str]],
) -> list[tuple[str, int | str, np.ndarray]]:
    """(path, key, RGB) for every readable file of ``listing`` (sorted by path), at most
    ``limit`` per key; what cannot be read is recorded in ``skipped`` with the reason."""
    per_key: dict[int | str, int] = {}
    out = []
    for rel, key in sorted(listing):
        if limit is not None and per_key.get(key, 0) >= limit:
            continue
        if not is_image_name(rel):
            skipped.append({"path": rel, "reason": "not an image file name"})
            continue
        try:
            rgb = read_rgb(base / rel)
        except BadImage as err:
            skipped.append({"path": rel, "reason": str(err)})
            continue
        except OSError as err:
            skipped.append({"path": rel, "reason": f"unreadable: {err.strerror or err}"})
            continue
        out.append((rel, key, rgb))
        per_key[key] = per_key.get(key, 0) + 1
    return out


def _read_worn(real: RealSet, limit: int | None) -> None:
    """The crops of ``real.root/worn/`` into ``real`` (at most ``limit`` per category), and one
    printed line naming the files of ``worn/`` that could not be read (counted as skipped)."""
    real.has_worn = True
    worn_skipped: list[dict[str, str]] = []
    listing = _worn_listing(real.root, worn_skipped)
    for rel, category, rgb in _read_listed(real.root, listing, limit, worn_skipped):
        real.worn_paths.append(rel)
        real.worn_categories.append(str(category))
        real.worn_images.append(rgb)
    real.skipped.extend(worn_skipped)
    if worn_skipped:
        names = ", ".join(d["path"] for d in worn_skipped[:SHOW_SKIPPED])
        more = len(worn_skipped) - SHOW_SKIPPED
        print(
            f"{real.root / WORN_DIR}: {len(worn_skipped)} files skipped (unreadable, not images "
            f"or without a category): {names}"
            + (f" and {more} more (the evaluation's skipped_images)" if more > 0 else "")
        )


def read_real_set(root: str | os.PathLike, limit: int | None = None, worn: bool = False) -> RealSet:
    """Every image of a real set, as RGB arrays; unreadable or non-image files are recorded.

    ``limit`` keeps at most that many images per class (the first ones, sorted by path).
    ``worn``: also read the set's ``worn/`` folder when it has one (at most ``limit`` per
    category); a set without it reads as with ``worn=False``."""
    root = Path(root)
    listing = _listing(root)
    base = root.parent if root.suffix == ".csv" else root
    real = RealSet(base)
    for rel, label, rgb in _read_listed(base, listing, limit, real.skipped):
        real.paths.append(rel)
        real.labels.append(int(label))
        real.images.append(rgb)
    if worn and (base / WORN_DIR).is_dir():
        _read_worn(real, limit)
    classes = (("wearing_mask (mask/)", 1), ("not_wearing_mask (nomask/)", 0))
    missing = [name for name, y in classes if y not in real.labels]
    if missing:
        raise ValueError(
            f"{root}: no readable {' or '.join(missing)} images: a real set needs both classes "
            f"(folders mask/ and nomask/, or labels.csv with path,label)"
        )
    return real


def reframe(rgb: np.ndarray, factor: float, native: float = NATIVE_FRAMING) -> np.ndarray:
    """The same face at another framing (a square of ``factor`` x the face box) as a
    ``SIDE`` x ``SIDE`` crop: a centre crop for tighter framings, edge-replicated border for
    looser ones (realdev crops hold no more of the photo)."""
    h, w = rgb.shape[:2]
    side = min(h, w) * factor / native
    if side <= min(h, w):
        s = max(8, int(round(side)))
        y0, x0 = (h - s) // 2, (w - s) // 2
        crop = rgb[y0 : y0 + s, x0 : x0 + s]
    else:
        pad = int(round((side - min(h, w)) / 2))
        crop = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if crop.shape[0] > SIDE else cv2.INTER_LINEAR
    return cv2.resize(crop, (SIDE, SIDE), interpolation=interp)


def _colour_name(rgb: np.ndarray) -> str:
    hsv = cv2.cvtColor(rgb.reshape(1, 1, 3).astype(np.uint8), cv2.COLOR_RGB2HSV)[0, 0]
    hue, sat, val = float(hsv[0]) * 2, float(hsv[1]) / 255, float(hsv[2]) / 255
    if val < 0.28:
        return "black/dark"
    if sat < 0.16:
        return "white/light" if val > 0.68 else "grey"
    if 170 <= hue <= 260:
        return "blue"
    if sat < 0.35 and val > 0.6 and (hue < 60 or hue > 330):
        return "cream/skin"
    return "other colour"


def describe(rgb: np.ndarray) -> dict[str, float | str]:
    """What the error analysis groups by: ``lower_colour`` (median colour of the lower middle of
    the face, where a mask sits), ``brightness`` (mean luminance, 0-255) and ``sharpness``
    (variance of the Laplacian at 128 px: low for faces that were small in their photo)."""
    im = (
        cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA) if rgb.shape[0] != SIDE else rgb
    )
    lower = im[int(0.58 * SIDE) : int(0.8 * SIDE), int(0.35 * SIDE) : int(0.65 * SIDE)]
    med = np.median(lower.reshape(-1, 3), 0)
    grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
    return {
        "lower_colour": _colour_name(med),
        "brightness": float(grey.mean()),
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_32F).var()),
    }


def _source_photos(csv_path: Path, prefix: str = "") -> dict[str, str]:
    """``prefix + path`` -> ``<source_repo>:<photo>`` for the rows of a ``labels.csv`` that name
    their source (``source_path`` = ``<photo>#<box>``); empty without the file."""
    photo: dict[str, str] = {}
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                src = (row.get("source_path") or "").split("#")[0]
                if src:
                    photo[prefix + row["path"]] = (row.get("source_repo") or "") + ":" + src
    return photo


def clusters(real: RealSet) -> list[str]:
    """What the bootstrap resamples together: the source photo of each crop when the set's
    ``labels.csv`` names it (``source_path`` = ``<photo>#<box>``: faces of one photo are not
    independent), else each crop alone."""
    photo = _source_photos(real.root / "labels.csv")
    return [photo.get(p, p) for p in real.paths]


def worn_clusters(real: RealSet) -> list[str]:
    """:func:`clusters` for the ``worn/`` crops (from ``worn/labels.csv``): a worn-wrong face
    and a proper mask of the same photo move together."""
    photo = _source_photos(real.root / WORN_DIR / "labels.csv", f"{WORN_DIR}/")
    return [photo.get(p, p) for p in real.worn_paths]


def bucket(value: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    """The name of the interval of ``edges`` that holds ``value`` (``len(names) == len(edges) + 1``)."""
    return names[int(np.searchsorted(edges, value, side="right"))]


BRIGHTNESS = ((70.0, 140.0), ("dark (<70)", "medium", "bright (>140)"))
SHARPNESS = ((60.0, 250.0), ("blurry (small face)", "medium", "sharp (large face)"))


def error_analysis(
    labels: list[int] | np.ndarray,
    probs: np.ndarray,
    threshold: float,
    descriptions: list[dict],
) -> dict[str, dict[str, dict]]:
    """Recall of the masked faces and false-positive rate of the unmasked faces at ``threshold``,
    per lower-face colour, brightness and sharpness bucket (from :func:`describe`)."""
    y = np.asarray(labels)
    hit = np.asarray(probs) >= threshold
    keys = {
        "lower_colour": [d["lower_colour"] for d in descriptions],
        "brightness": [bucket(d["brightness"], *BRIGHTNESS) for d in descriptions],
        "sharpness": [bucket(d["sharpness"], *SHARPNESS) for d in descriptions],
    }
    out: dict[str, dict[str, dict]] = {}
    for name, values in keys.items():
        v = np.asarray(values)
        table = {}
        for value in sorted(set(values)):
            m, n = (v == value) & (y == 1), (v == value) & (y == 0)
            table[value] = {
                "masked": int(m.sum()),
                "recall": float(hit[m].mean()) if m.any() else float("nan"),
                "unmasked": int(n.sum()),
                "false_positive_rate": float(hit[n].mean()) if n.any() else float("nan"),
            }
        out[name] = table
    return out


@torch.no_grad()
def real_metrics(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    threshold: float,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> dict:
    """``model`` on preprocessed real crops: AUC, and recall, specificity and accuracy at the
    threshold chosen on (synthetic) val (train's ``real_val``)."""
    model.eval()
    probs = []
    for i in range(0, len(images), 128):
        x = images[i : i + 128].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            probs.append(torch.sigmoid(model(x).squeeze(1).float()).cpu())
    p = torch.cat(probs).numpy()
    at = threshold_metrics(labels, p, threshold)
    return {
        "real/auc": auc_or_nan(labels, p),
        "real/recall": at["recall"],
        "real/specificity": at["specificity"],
        "real/accuracy": at["accuracy"],
    }
