"""Values every stage shares, written once: sizes, normalisation, splits, labels and paths."""

from __future__ import annotations

from pathlib import Path

FACE_SIZE = 128
"""Side of every stored face crop (both classes). The val/test view resizes a face to this side
and centre-crops :data:`IMAGE_SIZE`; a face found in a photo is cut to this side too."""
IMAGE_SIZE = 112
"""Network input side (pixels)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "val", "test")
LABELS = {"not_wearing_mask": 0, "wearing_mask": 1}
"""Label convention used everywhere: wearing_mask = 1, not_wearing_mask = 0."""
CLASS_NAMES = [name for name, _ in sorted(LABELS.items(), key=lambda kv: kv[1])]
"""Index = label: ``["not_wearing_mask", "wearing_mask"]``."""

ROOT = Path(__file__).resolve().parents[2]
"""The repository (notebooks, third_party/ and the default data/ and runs/ live here)."""
SHARED = ROOT.parent / "shared"
"""The shared folder beside the checkout: faces for offline work, real photos, real masks."""
SHARED_DATA = SHARED / "data"
LFW_ARCHIVE = SHARED_DATA / "lfw-deepfunneled.tgz"
LFW_MINI = SHARED_DATA / "lfw-mini.tgz"
PHOTOS_DIR = SHARED / "qualitative"
REALDEV_DIR = SHARED / "realdev"
"""Real masked and unmasked face crops: measured on, never trained on."""

CACHE_DIRNAME = "cache"
"""``DATA_DIR/cache``: the decoded uint8 images of the cached loader."""
PREDS_DIRNAME = "preds"
"""``RUN_DIR/preds``: prediction files (every epoch's val split, the test split)."""
