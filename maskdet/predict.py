"""Inference: probabilities for a loader's images, the prediction files, and the kiosk path
(face crops or whole photos through a trained or exported model).

Prediction files (``RUN_DIR/preds/*.csv``, one row per image: ``path,label,prob``) are written
and read here: every epoch's val split (:func:`epoch_predictions_path`) and the test split.

``python -m maskdet predict --checkpoint CKPT --out preds.csv PATH...``
    PATHs are files or folders (walked recursively, image extensions only). By default every
    image is taken to be **one face crop**, of any framing from a tight face box to an LFW-like
    loose crop. The framing is normalised: the face is found with the detector of
    :mod:`maskdet.detect` (YuNet at the crop's own scale; MTCNN and HOG on the crop padded with
    grey and upscaled), and re-cut with the training framing. When no face is found the image is
    classified as it is (resized to 128, centre crop 112, as the stored training crops) and its
    row says so: ``status=no_face``, ``framing=as_is``. With ``--photos`` every face the
    detector finds in each photo is classified. One CSV row per face: path, face index, box,
    detector score, probability of a mask, label (threshold chosen on val, stored in the
    checkpoint), framing, status, error. An unreadable file gets a row with ``status=error`` and
    the reason; a photo with no face gets a row with ``status=no_face``. Nothing aborts the
    batch. ``--out`` is checked before any work: never an input or inside an input folder, never
    a file maskdet did not write (``--overwrite`` replaces one); faces are classified in batches
    across images, and each row is written (flushed) to a temporary file as soon as its batch is
    done, renamed to ``--out`` at the end or at Ctrl-C (after ``kill -9`` the rows so far are in
    ``.NAME.part.csv`` beside it, and ``--out`` is as it was); a progress bar
    counts the images. The exit status is 1 when no input image was found.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .checkpoint import MAX_CHECKPOINT_BYTES, load_model
from .constants import (
    CLASS_NAMES,
    FACE_SIZE,
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREDS_DIRNAME,
)
from .detect import DETECT_SIZE, DetectedFace, FaceDetector, crop_face
from .guard import UnsafeFile, check_regular, printable, writing
from .imageio import BadImage, is_image_name, read_rgb
from .loader import loader_items, make_loaders
from .progress import bar as progress_bar
from .system import autocast

PAD_FRACTION = 0.5
"""Grey border added on each side of a face crop before detection (fraction of its side)."""
CSV_COLUMNS = [
    "path",
    "face",
    "left",
    "top",
    "right",
    "bottom",
    "det_score",
    "prob_mask",
    "label",
    "framing",
    "status",
    "error",
]
NO_FACE_IN_CROP = "no face found: classified as it is (framing=as_is)"
EPOCH_PREDS_RE = re.compile(r"val_epoch_(\d+)\.csv$")


# ------------------------------------------------------------------- a loader's images


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    progress: str | None = None,
) -> dict:
    """Probabilities for every image a loader yields: ``paths``, ``labels``, ``probs``, ``loss``
    (mean per image), the loader's ``indices`` and image count ``n`` (``progress``: the
    description of a text bar (:mod:`maskdet.progress`) over the batches; None: no bar)."""
    model.eval()
    crit = nn.BCEWithLogitsLoss(reduction="sum")
    items = loader_items(loader)
    labels, probs, idx = [], [], []
    loss = torch.zeros((), device=device)
    bar = dict(desc=progress, total=len(loader), unit="batch", disable=progress is None)
    for batch in progress_bar(loader, **bar):
        x = (
            batch.images.contiguous(memory_format=torch.channels_last)
            if channels_last
            else batch.images
        )
        with autocast(device, amp):
            logits = model(x).squeeze(1).float()
        loss += crit(logits, batch.labels.float())
        labels.append(batch.labels.cpu())
        probs.append(torch.sigmoid(logits).cpu())
        idx.append(batch.indices)
    n = sum(len(v) for v in labels)
    labels_np = torch.cat(labels).numpy() if labels else np.zeros(0)
    idx_np = torch.cat(idx).numpy() if idx else np.zeros(0, dtype=int)
    return {
        "paths": [items[i].path for i in idx_np],
        "labels": labels_np,
        "probs": torch.cat(probs).numpy() if probs else np.zeros(0),
        "loss": float(loss) / max(1, n),
        "indices": idx_np,
        "n": n,
    }


def merge_predictions(parts: list[dict]) -> dict:
    """The ranks' :func:`predict` results as one, in the loader's order (by index), as a single
    process would have predicted them; the loss is the mean over all images."""
    if len(parts) == 1:
        return parts[0]
    idx = np.concatenate([p["indices"] for p in parts])
    order = np.argsort(idx, kind="stable")
    n = sum(p["n"] for p in parts)
    paths = [path for p in parts for path in p["paths"]]
    return {
        "paths": [paths[i] for i in order],
        "labels": np.concatenate([p["labels"] for p in parts])[order],
        "probs": np.concatenate([p["probs"] for p in parts])[order],
        "loss": sum(p["loss"] * p["n"] for p in parts) / max(1, n),
        "indices": idx[order],
        "n": n,
    }


def predict_split(
    model: nn.Module,
    data_dir: str | os.PathLike,
    split: str,
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int | None = None,
    rows: list[dict[str, str]] | None = None,
    progress: bool = False,
) -> dict:
    """Probabilities for a split with the deterministic val/test view (cached path), and the
    images that could not be read (``skipped``). ``rows``: the manifest, when already read;
    ``progress``: a bar over the batches."""
    loader = make_loaders(
        data_dir,
        batch_size=batch_size,
        mode="cached",
        splits=(split,),
        limit=limit,
        val_limit=limit,
        device=device,
        workers=workers,
        rows=rows,
    )[split]
    pred = predict(
        model, loader, torch.device(device), progress=f"evaluate {split}" if progress else None
    )
    pred["skipped"] = dict(loader.skips.paths)
    return pred


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


# --------------------------------------------------------------------------- framing


def normalise_crop(
    rgb: np.ndarray, detector: FaceDetector
) -> tuple[np.ndarray, DetectedFace | None]:
    """A face crop of unknown framing -> the training framing (128x128), and the face found.

    YuNet looks at the crop as it is (best at the crop's own scale: ``detect_size=None``); MTCNN
    and HOG at the crop padded with grey by :data:`PAD_FRACTION` per side, so that tight crops
    still show them a whole face. The face nearest the centre is taken, and it is re-cut from the
    original pixels (border replicated). No face: the crop is returned resized to 128 (``None``
    as face).
    """
    h, w = rgb.shape[:2]
    pad = 0 if detector.backend == "yunet" else int(round(PAD_FRACTION * max(h, w)))
    padded = (
        cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        if pad
        else rgb
    )
    faces = detector.detect(padded)
    if not faces:
        k = FACE_SIZE / min(h, w)
        resized = cv2.resize(
            rgb,
            (max(FACE_SIZE, round(w * k)), max(FACE_SIZE, round(h * k))),
            interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
        )
        y0, x0 = (resized.shape[0] - FACE_SIZE) // 2, (resized.shape[1] - FACE_SIZE) // 2
        return resized[y0 : y0 + FACE_SIZE, x0 : x0 + FACE_SIZE], None
    cy, cx = padded.shape[0] / 2, padded.shape[1] / 2
    f = min(
        faces,
        key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2,
    )
    box = (f.box[0] - pad, f.box[1] - pad, f.box[2] - pad, f.box[3] - pad)
    face = DetectedFace(
        box, f.score, None if f.landmarks is None else f.landmarks - pad, f.detector
    )
    return crop_face(rgb, box, f.detector, landmarks=face.landmarks), face


# --------------------------------------------------------------------------- predict


def iter_images(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named on the command line (whatever their name) and image files under folders."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if is_image_name(name):
                        yield Path(root) / name
        else:
            yield p


def _row(path, face="", box=None, score="", framing="", status="ok", error="") -> dict:
    """A CSV row without its classification (``prob_mask`` and ``label`` are filled later)."""
    x0, y0, x1, y1 = ("", "", "", "") if box is None else (f"{v:.1f}" for v in box)
    return {
        "path": str(path),
        "face": face,
        "left": x0,
        "top": y0,
        "right": x1,
        "bottom": y1,
        "det_score": "" if score == "" else f"{score:.4f}",
        "prob_mask": "",
        "label": "",
        "framing": framing,
        "status": status,
        "error": error,
    }


def _faces_of(
    path: Path, photos: bool, detector: FaceDetector
) -> list[tuple[dict, np.ndarray | None]]:
    """The rows of one image, each with the crop to classify (None: nothing to classify)."""
    try:
        rgb = read_rgb(path)
    except BadImage as err:
        return [(_row(path, status="error", error=str(err)), None)]
    if photos:
        faces = detector.detect(rgb)
        if not faces:
            return [(_row(path, status="no_face", error="the detector found no face"), None)]
        return [
            (
                _row(path, i, f.box, f.score, framing="detected"),
                crop_face(rgb, f.box, f.detector, landmarks=f.landmarks),
            )
            for i, f in enumerate(faces)
        ]
    crop, face = normalise_crop(rgb, detector)
    if face is None:  # classified as it is, and said so: a kiosk must be able to tell
        row = _row(path, 0, framing="as_is", status="no_face", error=NO_FACE_IN_CROP)
    else:
        row = _row(path, 0, face.box, face.score, framing="detected")
    return [(row, crop)]


def iter_predictions(
    classifier: MaskClassifier,
    paths: Iterable[str | os.PathLike],
    photos: bool = False,
    detector: FaceDetector | None = None,
    threshold: float | None = None,
    keep_crops: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> Iterator[dict]:
    """One row per face for every image under ``paths`` (see the module docstring), in input
    order, as soon as its batch is classified: faces are gathered across images into batches of
    ``batch_size``. The detector defaults to YuNet at its photo scale (``photos``) or at the
    crop's own scale. ``keep_crops``: each row also holds its 128x128 crop under ``"crop"``.
    ``progress``: a bar over the images (:mod:`maskdet.progress`)."""
    thr = classifier.threshold if threshold is None else threshold
    detector = detector or FaceDetector(detect_size=DETECT_SIZE["photo" if photos else "crop"])
    files = list(iter_images(paths))
    pending: list[tuple[dict, np.ndarray | None]] = []
    faces = 0
    bar = progress_bar(files, desc="predict", unit="image", disable=not progress)
    for n, path in enumerate(bar, 1):
        pending += _faces_of(path, photos, detector)
        if sum(c is not None for _, c in pending) >= batch_size or n == len(files):
            crops = [c for _, c in pending if c is not None]
            probs = iter(classifier.probs(crops, batch_size))
            for row, crop in pending:
                if crop is not None:
                    p = float(next(probs))
                    row["prob_mask"], row["label"] = f"{p:.6f}", CLASS_NAMES[int(p >= thr)]
                    faces += row["status"] == "ok"
                    if keep_crops:
                        row["crop"] = crop
                yield row
            pending = []
            bar.set_postfix(faces=faces, refresh=False)


def predict_paths(
    classifier: MaskClassifier, paths: Iterable[str | os.PathLike], **options
) -> list[dict]:
    """The rows of :func:`iter_predictions` (same keyword options) as a list, for notebooks."""
    return list(iter_predictions(classifier, paths, **options))


def write_rows(
    path: str | os.PathLike,
    rows: Iterable[dict],
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> dict[str, int]:
    """Rows (of :func:`iter_predictions`) to a CSV with :data:`CSV_COLUMNS`, through
    :func:`maskdet.guard.writing` (checked before the first row is asked for; rows flushed one by
    one to a temporary file renamed at the end or at Ctrl-C); names not UTF-8 escaped. Returns
    the counts: rows, images (files that exist), ok faces, no_face, errors, masked."""
    counts = dict.fromkeys(("rows", "images", "faces", "no_face", "errors", "masked"), 0)
    seen: set[str] = set()
    with (
        writing(path, inputs, overwrite) as part,
        open(part, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh,
    ):
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        fh.flush()
        for row in rows:
            w.writerow(row | {"path": printable(row["path"])})
            fh.flush()
            counts["rows"] += 1
            if row["path"] not in seen:
                seen.add(row["path"])
                counts["images"] += Path(row["path"]).is_file()
            status = row["status"]
            counts[{"ok": "faces", "no_face": "no_face", "error": "errors"}[status]] += 1
            counts["masked"] += status == "ok" and row["label"] == CLASS_NAMES[1]
    return counts
