"""The inference core that training, evaluation and the kiosk share: the classifier for face
crops (:class:`MaskClassifier`: a checkpoint or an exported model, with its :class:`Preprocess`)
and the prediction files.

Prediction files (``RUN_DIR/preds/*.csv``, one row per image: ``path,label,prob``) are written
and read here: every epoch's val split (:func:`epoch_predictions_path`) and the test split.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .checkpoint import MAX_CHECKPOINT_BYTES, load_model
from .constants import FACE_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, PREDS_DIRNAME
from .guard import UnsafeFile, check_regular

EPOCH_PREDS_RE = re.compile(r"val_epoch_(\d+)\.csv$")


# --------------------------------------------------------------------- prediction files


def write_predictions(
    path: str | os.PathLike, paths: Sequence[str], labels: Sequence, probs: Sequence
) -> Path:
    """``path,label,prob`` rows (paths relative to DATA_DIR, label 1 = wearing_mask; the
    probability with 8 significant digits, as precise as the float32 it comes from)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label", "prob"])
        for a, b, c in zip(paths, labels, probs):
            w.writerow([a, int(b), f"{float(c):.8g}"])
    return path


def read_predictions(path: str | os.PathLike) -> dict[str, list]:
    """A predictions CSV (columns path, label, prob at least) as lists by column."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"label", "prob"} <= set(rows[0]):
        raise ValueError(f"{path}: need columns label and prob, found {list(rows[0])}")
    return {
        "path": [r.get("path", "") for r in rows],
        "label": [int(float(r["label"])) for r in rows],
        "prob": [float(r["prob"]) for r in rows],
    }


def epoch_predictions_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``RUN_DIR/preds/val_epoch_XXX.csv``: the val predictions of one epoch."""
    return Path(run_dir) / PREDS_DIRNAME / f"val_epoch_{epoch:03d}.csv"


def epoch_prediction_files(run_dir: str | os.PathLike) -> dict[int, Path]:
    """Every epoch's val predictions file by epoch number."""
    folder = Path(run_dir) / PREDS_DIRNAME
    out = {}
    for f in sorted(folder.glob("val_epoch_*.csv")) if folder.is_dir() else []:
        m = EPOCH_PREDS_RE.search(f.name)
        if m:
            out[int(m.group(1))] = f
    return out


# ----------------------------------------------------------------- the kiosk classifier


@dataclass
class Preprocess:
    """What the checkpoint says about the input: centre crop ``image_size`` of a ``resize_size``
    face crop, ImageNet mean/std."""

    image_size: int = IMAGE_SIZE
    resize_size: int = FACE_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_meta(cls, meta: dict) -> Preprocess:
        d = cls()
        return cls(
            int(meta.get("image_size", d.image_size)),
            int(meta.get("resize_size", d.resize_size)),
            tuple(meta.get("mean", d.mean)),
            tuple(meta.get("std", d.std)),
        )

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Face crops (H, W, 3 uint8) -> normalised float32 batch (N, 3, S, S), as the val loader."""
        s, r = self.image_size, self.resize_size
        out = np.empty((len(crops), 3, s, s), dtype=np.float32)
        mean = np.asarray(self.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(3, 1, 1)
        for i, rgb in enumerate(crops):
            h, w = rgb.shape[:2]
            if min(h, w) != r:  # resize the shorter side to resize_size
                k = r / min(h, w)
                rgb = cv2.resize(
                    rgb,
                    (max(r, round(w * k)), max(r, round(h * k))),
                    interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                )
                h, w = rgb.shape[:2]
            y0, x0 = (h - s) // 2, (w - s) // 2
            x = rgb[y0 : y0 + s, x0 : x0 + s].transpose(2, 0, 1).astype(np.float32) / 255.0
            out[i] = (x - mean) / std
        return out


class MaskClassifier:
    """A trained checkpoint (``best.pt``) or an exported model (``model.onnx`` / ``model.ts``
    with ``model.json``) that gives the probability of a mask for face crops."""

    def __init__(
        self, model_path: str | os.PathLike, device: str = "cpu", threads: int | None = None
    ) -> None:
        path = Path(model_path)
        self.path, self.kind = path, path.suffix.lstrip(".")
        if self.kind != "pt" and path.exists():  # a .pt is checked by load_checkpoint
            try:
                check_regular(path, MAX_CHECKPOINT_BYTES, "model")
            except UnsafeFile as err:
                raise ValueError(f"{path}: {err}") from None
        if self.kind == "pt":
            self.model, meta = load_model(path, device)
            self.device = device
        else:
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if self.kind == "onnx":
                import onnxruntime as ort  # heavy, and only needed for exported models

                so = ort.SessionOptions()
                if threads:
                    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
                # idle threads sleep instead of spinning: spinning ones took the cores from the
                # face detector and from other processes (int8, one face: 26 -> 12 ms, loaded CPU)
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                self.session = ort.InferenceSession(
                    str(path), so, providers=["CPUExecutionProvider"]
                )
                self.input_name = self.session.get_inputs()[0].name
            elif self.kind == "ts":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    self.model = torch.jit.load(str(path), map_location="cpu").eval()
            else:
                raise ValueError(f"{path}: expected a .pt checkpoint, .onnx or .ts file")
        self.meta = meta
        self.threshold = float(meta.get("threshold", 0.5))
        self.preprocess = Preprocess.from_meta(meta)

    @classmethod
    def from_model(cls, model: nn.Module, meta: dict, device: str = "cpu") -> MaskClassifier:
        """A classifier around a model in memory with its checkpoint metadata."""
        clf = cls.__new__(cls)
        clf.path, clf.kind, clf.model, clf.device, clf.meta = None, "pt", model, device, meta
        clf.threshold = float(meta.get("threshold", 0.5))
        clf.preprocess = Preprocess.from_meta(meta)
        return clf

    def probs_from_batch(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a preprocessed batch (N, 3, S, S) float32."""
        if self.kind == "onnx":
            return self.session.run(None, {self.input_name: x})[0].reshape(-1)
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.kind == "pt":
                return torch.sigmoid(self.model(t.to(self.device)).reshape(-1)).cpu().numpy()
            return self.model(t).reshape(-1).numpy()

    def probs(self, crops: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Probability of a mask for each face crop (uint8 RGB, training framing)."""
        out = [
            self.probs_from_batch(self.preprocess(crops[i : i + batch_size]))
            for i in range(0, len(crops), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.float32)
