"""Predictions for a kiosk: classify face crops or whole photos, export, and time inference.

``python -m maskdet predict --checkpoint CKPT --out preds.csv PATH...``
    PATHs are files or folders (walked recursively, image extensions only). By default every
    image is taken to be **one face crop**, of any framing from a tight face box to an LFW-like
    loose crop. The framing is normalised: the face is found with the detector of
    :mod:`maskdet.detect` on the crop padded with grey on every side (so that tight crops still
    show a whole face to the detector), and re-cut with the training framing. When no face is
    found the image is used as it is (``framing=as_is``: resized to 128, centre crop 112, as the
    stored training crops). With ``--photos`` every face the detector finds in each photo is
    classified. One CSV row per face: path, face index, box, detector score, probability of a
    mask, label (threshold chosen on val, stored in the checkpoint), framing, status, error.
    An unreadable file gets a row with ``status=error`` and the reason; a photo with no face gets
    a row with ``status=no_face``. Nothing aborts the batch.

``python -m maskdet export --checkpoint CKPT --out DIR``
    ``model.onnx`` (run with ONNX Runtime) and ``model.ts`` (TorchScript) that output the
    probability of a mask for a (N, 3, 112, 112) normalised batch, ``model.json`` with the
    preprocessing, and a parity check against the PyTorch model (max |difference| of
    probabilities, required <= 1e-4).

``python -m maskdet bench infer``
    Milliseconds per face (p50, p95) at batch 1 with 2 threads, PNG decode and preprocessing
    included, for eager PyTorch, TorchScript and ONNX Runtime.
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detect import CROP_SIZE, DetectedFace, FaceDetector, crop_face
from .imageio import BadImage, is_image_name, read_rgb

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
PARITY_TOL = 1e-4


# ------------------------------------------------------------------------ the classifier


@dataclass
class Preprocess:
    """What the checkpoint says about the input: centre crop ``image_size`` of a ``resize_size``
    face crop, ImageNet mean/std."""

    image_size: int = 112
    resize_size: int = 128
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

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
        import cv2

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
        if self.kind == "pt":
            from .train import load_model

            self.model, meta = load_model(path, device)
            self.device = device
        else:
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if self.kind == "onnx":
                import onnxruntime as ort

                so = ort.SessionOptions()
                if threads:
                    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                self.session = ort.InferenceSession(
                    str(path), so, providers=["CPUExecutionProvider"]
                )
                self.input_name = self.session.get_inputs()[0].name
            elif self.kind == "ts":
                import torch

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    self.model = torch.jit.load(str(path), map_location="cpu").eval()
            else:
                raise ValueError(f"{path}: expected a .pt checkpoint, .onnx or .ts file")
        self.meta = meta
        self.threshold = float(meta.get("threshold", 0.5))
        self.preprocess = Preprocess.from_meta(meta)

    def probs_from_batch(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a preprocessed batch (N, 3, S, S) float32."""
        if self.kind == "onnx":
            return self.session.run(None, {self.input_name: x})[0].reshape(-1)
        import torch

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

    The crop is padded with grey by :data:`PAD_FRACTION` per side, the face nearest the centre is
    taken, and it is re-cut from the original pixels (border replicated). No face: the crop is
    returned resized to 128 (``None`` as face).
    """
    import cv2

    h, w = rgb.shape[:2]
    pad = int(round(PAD_FRACTION * max(h, w)))
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    faces = detector.detect(padded)
    if not faces:
        k = CROP_SIZE / min(h, w)
        resized = cv2.resize(
            rgb,
            (max(CROP_SIZE, round(w * k)), max(CROP_SIZE, round(h * k))),
            interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
        )
        y0, x0 = (resized.shape[0] - CROP_SIZE) // 2, (resized.shape[1] - CROP_SIZE) // 2
        return resized[y0 : y0 + CROP_SIZE, x0 : x0 + CROP_SIZE], None
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


def _row(
    path, face="", box=None, score="", prob="", label="", framing="", status="ok", error=""
) -> dict:
    x0, y0, x1, y1 = ("", "", "", "") if box is None else (f"{v:.1f}" for v in box)
    return {
        "path": str(path),
        "face": face,
        "left": x0,
        "top": y0,
        "right": x1,
        "bottom": y1,
        "det_score": "" if score == "" else f"{score:.4f}",
        "prob_mask": "" if prob == "" else f"{prob:.6f}",
        "label": label,
        "framing": framing,
        "status": status,
        "error": error,
    }


def predict_paths(
    classifier: MaskClassifier,
    paths: Iterable[str | os.PathLike],
    photos: bool = False,
    detector: FaceDetector | None = None,
    threshold: float | None = None,
    keep_crops: bool = False,
) -> list[dict]:
    """One row per face for every image under ``paths`` (see the module docstring).

    ``keep_crops``: also return each face's 128x128 crop under ``"crop"`` (for galleries).
    """
    from . import LABELS

    names = {v: k for k, v in LABELS.items()}
    thr = classifier.threshold if threshold is None else threshold
    detector = detector or FaceDetector()
    rows: list[dict] = []
    for path in iter_images(paths):
        try:
            rgb = read_rgb(path)
        except BadImage as err:
            rows.append(_row(path, status="error", error=str(err)))
            continue
        crops, faces, framings = [], [], []
        if photos:
            faces = detector.detect(rgb)
            crops = [crop_face(rgb, f.box, f.detector, landmarks=f.landmarks) for f in faces]
            framings = ["detected"] * len(faces)
            if not faces:
                rows.append(_row(path, status="no_face", error="the detector found no face"))
                continue
        else:
            crop, face = normalise_crop(rgb, detector)
            crops, faces, framings = [crop], [face], ["detected" if face else "as_is"]
        probs = classifier.probs(crops)
        for i, (crop, face, framing, p) in enumerate(zip(crops, faces, framings, probs)):
            row = _row(
                path,
                i,
                face.box if face else None,
                face.score if face else "",
                float(p),
                names[int(p >= thr)],
                framing,
            )
            if keep_crops:
                row["crop"] = crop
            rows.append(row)
    return rows


def write_rows(path: str | os.PathLike, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def add_predict_args(p) -> None:
    p.add_argument("paths", nargs="+", help="image files and/or folders (walked)")
    p.add_argument(
        "--checkpoint", required=True, help="best.pt, or an exported model.onnx / model.ts"
    )
    p.add_argument("--out", default="preds.csv")
    p.add_argument("--photos", action="store_true", help="detect every face in each photo first")
    p.add_argument(
        "--threshold", type=float, default=None, help="default: chosen on val (in the checkpoint)"
    )
    p.add_argument("--detector", choices=["mtcnn", "hog"], default="mtcnn")


def predict_cli(a) -> list[dict]:
    clf = MaskClassifier(a.checkpoint)
    rows = predict_paths(
        clf, a.paths, photos=a.photos, detector=FaceDetector(a.detector), threshold=a.threshold
    )
    write_rows(a.out, rows)
    by = {s: sum(r["status"] == s for r in rows) for s in ("ok", "no_face", "error")}
    print(
        json.dumps(
            {
                "out": a.out,
                "faces": by["ok"],
                "no_face": by["no_face"],
                "errors": by["error"],
                "masked": sum(r["label"] == "wearing_mask" for r in rows),
            },
            indent=2,
        )
    )
    return rows


# ---------------------------------------------------------------------------- export


class _WithSigmoid:
    """Wrap a logit model so the exported graph outputs the probability of a mask."""

    def __new__(cls, model):
        import torch

        class Prob(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return torch.sigmoid(self.m(x))

        return Prob(model).eval()


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("onnx", "torchscript"),
    parity_images: np.ndarray | None = None,
    int8_data: str | os.PathLike | None = None,
) -> dict:
    """Export ``checkpoint`` to ONNX and/or TorchScript in ``out_dir`` and check parity.

    Parity: probabilities of the exported model vs the PyTorch model on ``parity_images``
    (preprocessed batch; default: 16 random normalised inputs plus a constant one); an exported
    model further than :data:`PARITY_TOL` is an error. With ``int8_data`` (a DATA_DIR) an int8
    ONNX model is also written, calibrated on val faces and compared with the float model on
    test faces (:func:`export_int8`).
    """
    from .train import load_model

    model, meta = load_model(checkpoint, "cpu")
    result = export_module(model, meta, out_dir, formats, parity_images)
    result["checkpoint"] = str(checkpoint)
    if int8_data:
        if "onnx" not in result["files"]:
            raise ValueError("the int8 model is made from the ONNX export: include format onnx")
        result["int8"] = export_int8(Path(out_dir) / "model.onnx", int8_data)
    (Path(out_dir) / "export.json").write_text(json.dumps(result, indent=2))
    return result


def export_module(
    model,
    meta: dict,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("onnx", "torchscript"),
    parity_images: np.ndarray | None = None,
) -> dict:
    """:func:`export_model` for a model in memory with its checkpoint metadata."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prob_model = _WithSigmoid(model.eval())
    pre = Preprocess.from_meta(meta)
    s = pre.image_size
    if parity_images is None:
        g = torch.Generator().manual_seed(0)
        parity_images = torch.cat(
            [torch.randn(16, 3, s, s, generator=g), torch.zeros(1, 3, s, s)]
        ).numpy()
    x = torch.from_numpy(np.ascontiguousarray(parity_images, dtype=np.float32))
    with torch.inference_mode():
        ref = prob_model(x).reshape(-1).numpy()
    info = {
        k: meta.get(k)
        for k in (
            "arch",
            "image_size",
            "resize_size",
            "mean",
            "std",
            "class_names",
            "positive_class",
            "threshold",
            "epoch",
            "val_auc",
        )
    }
    info.update(
        image_size=pre.image_size,
        resize_size=pre.resize_size,
        mean=list(pre.mean),
        std=list(pre.std),
    )
    info["output"] = "probability of wearing_mask, shape (N, 1)"
    info["input"] = (
        f"float32 (N, 3, {s}, {s}): RGB face crop in the training framing, centre crop, ImageNet-normalised"
    )
    result: dict = {"files": {}, "parity_max_abs_diff": {}}
    example = torch.zeros(1, 3, s, s)
    (out / "model.json").write_text(json.dumps(info, indent=2))
    if "onnx" in formats:
        path = out / "model.onnx"
        torch.onnx.export(
            prob_model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["prob_mask"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
        result["files"]["onnx"] = str(path)
    if "torchscript" in formats:
        path = out / "model.ts"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # TorchScript is deprecated upstream, still works
            ts = torch.jit.freeze(torch.jit.trace(prob_model, example))
            ts.save(str(path))
        result["files"]["torchscript"] = str(path)
    for kind, path in result["files"].items():
        probs = MaskClassifier(path).probs_from_batch(x.numpy())
        diff = float(np.max(np.abs(probs - ref)))
        result["parity_max_abs_diff"][kind] = diff
        if not diff <= PARITY_TOL:
            raise AssertionError(f"{kind} export differs from PyTorch by {diff:.2e} > {PARITY_TOL}")
    return result


def export_int8(
    onnx_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    n_calibration: int = 64,
    n_test: int = 1000,
) -> dict:
    """``model.int8.onnx`` next to ``onnx_path``: static int8 (:func:`quantize_int8`) calibrated
    on ``n_calibration`` val faces of ``data_dir``, then measured against the float model on up
    to ``n_test`` test faces: largest and mean probability difference, label agreement at the
    model's threshold, and both AUCs. It is not within :data:`PARITY_TOL`; these numbers say what
    it costs."""
    from sklearn.metrics import roc_auc_score

    from .imageio import read_rgb
    from .manifest import read_manifest, usable

    rows = read_manifest(data_dir)
    fp32 = MaskClassifier(onnx_path)
    pre = fp32.preprocess

    def faces(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        rs = usable(rows, split)
        rs = [rs[i] for i in np.linspace(0, len(rs) - 1, min(n, len(rs))).astype(int)] if rs else []
        if not rs:
            raise ValueError(f"{data_dir}: no usable {split} faces for the int8 model")
        x = pre([read_rgb(Path(data_dir) / r["path"]) for r in rs])
        return x, np.array([r["label"] == "wearing_mask" for r in rs])

    calib, _ = faces("val", n_calibration)
    dst = quantize_int8(onnx_path, Path(onnx_path).with_name("model.int8.onnx"), calib)
    x, y = faces("test", n_test)
    int8 = MaskClassifier(dst)
    pf = np.concatenate([fp32.probs_from_batch(x[i : i + 64]) for i in range(0, len(x), 64)])
    pq = np.concatenate([int8.probs_from_batch(x[i : i + 64]) for i in range(0, len(x), 64)])
    t = fp32.threshold
    report = {
        "file": str(dst),
        "calibration_faces": len(calib),
        "test_faces": len(x),
        "max_abs_diff": round(float(np.abs(pq - pf).max()), 4),
        "mean_abs_diff": round(float(np.abs(pq - pf).mean()), 5),
        "label_agreement": round(float(((pq >= t) == (pf >= t)).mean()), 4),
    }
    if 0 < y.sum() < len(y):
        report["auc_fp32"] = round(float(roc_auc_score(y, pf)), 4)
        report["auc_int8"] = round(float(roc_auc_score(y, pq)), 4)
    return report


def add_export_args(p) -> None:
    p.add_argument("--checkpoint", required=True, help="best.pt of a training run")
    p.add_argument("--out", required=True, help="folder for model.onnx, model.ts, model.json")
    p.add_argument(
        "--format",
        action="append",
        choices=["onnx", "torchscript"],
        default=None,
        help="repeatable; default both",
    )
    p.add_argument(
        "--int8",
        metavar="DATA_DIR",
        default=None,
        help="also write model.int8.onnx (faster on CPUs), calibrated on DATA_DIR's val faces and "
        "compared with the float model on its test faces",
    )


def export_cli(a) -> dict:
    r = export_model(
        a.checkpoint, a.out, tuple(a.format or ("onnx", "torchscript")), int8_data=a.int8
    )
    print(json.dumps(r, indent=2))
    return r


# ----------------------------------------------------------------------------- bench


def bench_faces(n: int = 32, data_dir: str | os.PathLike | None = None) -> list[bytes]:
    """PNG bytes of ``n`` real 128x128 face crops: DATA_DIR's test split, or LFW-mini cropped as
    stage 01 does (central 64%)."""
    import io
    import tarfile

    import cv2
    from PIL import Image

    from .data import CROP_FRACTION
    from .imageio import decode_rgb
    from .pipeline import SHARED

    if data_dir:
        files = sorted((Path(data_dir) / "test").rglob("*.png"))[:n]
        return [f.read_bytes() for f in files]
    out = []
    with tarfile.open(SHARED / "lfw-mini.tgz") as tf:
        for m in tf:
            if len(out) >= n:
                break
            if not (m.isfile() and m.name.lower().endswith(".jpg")):
                continue
            rgb = decode_rgb(tf.extractfile(m).read())
            h, w = rgb.shape[:2]
            side = int(round(CROP_FRACTION * min(h, w)))
            y0, x0 = (h - side) // 2, (w - side) // 2
            crop = cv2.resize(
                rgb[y0 : y0 + side, x0 : x0 + side],
                (CROP_SIZE, CROP_SIZE),
                interpolation=cv2.INTER_AREA,
            )
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, format="PNG", compress_level=6)
            out.append(buf.getvalue())
    return out


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, MinMax calibration on real faces).

    ``reduce_range`` (7-bit weights): x86 CPUs without VNNI multiply u8 x s8 with 16-bit
    saturating adds, which overflow at full range; on the demo ResNet-50 this halves the largest
    probability error (0.135 -> 0.070) at no cost in speed. Faster on CPUs, but not within the
    1e-4 parity of :func:`export_model`: :func:`export_int8` measures what it costs.
    """
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"image": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    meta = Path(src).with_suffix(".json")
    if meta.exists():
        Path(dst).with_suffix(".json").write_text(meta.read_text())
    return Path(dst)


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def bench_infer(
    checkpoint: str | os.PathLike | None = None,
    arch: str = "resnet50",
    threads: int = 2,
    iters: int = 200,
    warmup: int = 20,
    data_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    quantized: bool = True,
) -> list[dict]:
    """ms per face at batch 1: PNG bytes -> decode -> preprocess -> probability.

    Engines: eager PyTorch, TorchScript (frozen), ONNX Runtime (all optimisations), and, with
    ``quantized``, ONNX Runtime with static int8 quantisation calibrated on the bench faces
    (reported with its parity; not what ``export`` writes). Without ``checkpoint`` a random-init ``arch`` is timed (same cost).
    Rows also give decode+preprocess alone. All in one run, so the numbers compare.
    """
    import tempfile

    import torch

    from .imageio import decode_rgb
    from .model import build_model

    torch.set_num_threads(threads)
    faces = bench_faces(32, data_dir)
    if checkpoint:
        from .train import load_model

        model, meta = load_model(checkpoint, "cpu")
    else:
        model, _ = build_model(arch, pretrained=False, verbose=False)
        meta = {"arch": arch, "threshold": 0.5}
    model.eval()
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    out = Path(work_dir or tmp.name)
    pre = Preprocess.from_meta(meta)
    parity_x = pre([decode_rgb(b) for b in faces[:16]])
    export_module(model, meta, out, ("onnx", "torchscript"), parity_images=parity_x)
    engines: dict[str, MaskClassifier] = {}
    eager = MaskClassifier.__new__(MaskClassifier)
    eager.kind, eager.model, eager.device, eager.meta, eager.threshold, eager.preprocess = (
        "pt",
        model,
        "cpu",
        meta,
        0.5,
        pre,
    )
    engines["pytorch eager"] = eager
    engines["torchscript"] = MaskClassifier(out / "model.ts")
    engines["onnxruntime"] = MaskClassifier(out / "model.onnx", threads=threads)
    if quantized:
        quantize_int8(
            out / "model.onnx", out / "model.int8.onnx", pre([decode_rgb(b) for b in faces])
        )
        engines["onnxruntime int8 (static, QDQ)"] = MaskClassifier(
            out / "model.int8.onnx", threads=threads
        )
    ref = eager.probs_from_batch(parity_x)
    for clf in engines.values():
        for i in range(warmup):
            clf.probs_from_batch(pre([decode_rgb(faces[i % len(faces)])]))
    # engines take turns in blocks (rounds), so a busy machine slows them alike; within a block
    # one engine runs alone (thread pools of torch and ONNX Runtime spin-wait after each call
    # and would slow each other if interleaved face by face)
    ms: dict[str, list[float]] = {"decode + preprocess only": [], **{k: [] for k in engines}}
    rounds = 4
    block = max(1, iters // rounds)
    for r in range(rounds):
        for name in ms:
            clf = engines.get(name)
            for i in range(r * block, (r + 1) * block):
                data = faces[i % len(faces)]
                t0 = time.perf_counter()
                x = pre([decode_rgb(data)])
                if clf is not None:
                    clf.probs_from_batch(x)
                ms[name].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for name, t in ms.items():
        diff = (
            ""
            if name not in engines
            else f"{np.max(np.abs(engines[name].probs_from_batch(parity_x) - ref)):.1e}"
        )
        rows.append({"engine": name, **_percentiles(t), "max_abs_diff_vs_eager": diff})
    if tmp is not None:
        tmp.cleanup()
    return rows


def format_bench(rows: list[dict], title: str) -> str:
    lines = [
        title,
        f"{'engine':30s} {'p50 ms':>8s} {'p95 ms':>8s} {'mean ms':>8s} {'|dp| vs eager':>14s}",
    ]
    for r in rows:
        lines.append(
            f"{r['engine']:30s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['mean_ms']:8.2f} "
            f"{r['max_abs_diff_vs_eager']:>14s}"
        )
    return "\n".join(lines)


def bench_infer_cli(a) -> list[dict]:
    """``python -m maskdet bench infer [--checkpoint CKPT] [--arch resnet50] [--threads 2]``."""
    import torch

    ckpt = getattr(a, "checkpoint", None)
    arch = getattr(a, "arch", None) or "resnet50"
    threads = getattr(a, "threads", None) or 2
    iters = getattr(a, "images", None) or 200
    rows = bench_infer(ckpt, arch, threads, iters, data_dir=getattr(a, "data", None))
    print(
        format_bench(
            rows,
            f"inference, batch 1, {threads} threads, {ckpt or arch + ' (random init)'} at "
            f"112x112, PNG decode + preprocessing included; torch {torch.__version__}, "
            f"{iters} faces per engine",
        )
    )
    return rows


# ------------------------------------------------------------------ labelled photo folders


def photo_summary(rows: list[dict], labels_csv: str | os.PathLike | None = None) -> list[dict]:
    """Per photo: faces found, faces called masked, and the photo's label from ``labels.csv``
    (columns file,label) when there is one; ``agree`` = share of its faces whose predicted label
    equals the photo's label (a photo label says what most people in it wear, not every face)."""
    labels = {}
    if labels_csv and Path(labels_csv).exists():
        with open(labels_csv, newline="", encoding="utf-8") as fh:
            labels = {r["file"]: r["label"] for r in csv.DictReader(fh)}
    out: dict[str, dict] = {}
    for r in rows:
        name = Path(r["path"]).name
        s = out.setdefault(
            name,
            {
                "file": name,
                "photo_label": labels.get(name, ""),
                "faces": 0,
                "masked": 0,
                "status": r["status"],
            },
        )
        if r["status"] == "ok":
            s["faces"] += 1
            s["masked"] += r["label"] == "wearing_mask"
    for s in out.values():
        if s["photo_label"] and s["faces"]:
            want = s["photo_label"] == "wearing_mask"
            s["agree"] = round((s["masked"] if want else s["faces"] - s["masked"]) / s["faces"], 3)
    return list(out.values())
