"""``python -m maskdet bench kiosk``: the kiosk end to end, frames/s and ms per frame (p50, p95)
on 640x480 videos made from real photos with 1 and with 4 faces, for today's path (MTCNN +
PyTorch) and the kiosk's (YuNet + ONNX float, YuNet + ONNX int8); then ``predict`` on real face
crops: faces/s and label agreement, today's path against the new one."""

from __future__ import annotations

import csv
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.checkpoint import load_model
from ..core.constants import CLASS_NAMES, PHOTOS_DIR, REALDEV_DIR
from ..core.imageio import decode_rgb
from ..core.inference import MaskClassifier
from ..core.model import build_model
from ..deploy.clips import clip_from_photos, single_face_photos, write_video
from ..deploy.detect import DETECT_SIZE, FaceDetector
from ..deploy.export import export_module, quantize_int8
from ..deploy.kiosk import run_kiosk
from ..deploy.predict import predict_paths
from .common import in_turns
from .infer import bench_faces


def _videos(work: Path, photos: str, frames: int) -> dict[str, Path]:
    """Two clips of ``frames`` frames: one person at a time and four at a time, several people
    each (segments of 20 frames), mixing masked and unmasked photos."""
    people = single_face_photos(photos)
    out = {}
    for n in (1, 4):
        clip: list[np.ndarray] = []
        for k in range(0, len(people) - n + 1, n):
            clip += clip_from_photos(people[k : k + n], frames=20, people=n)
            if len(clip) >= frames:
                break
        out[f"{n} face" + ("s" if n > 1 else "")] = write_video(work / f"{n}.mp4", clip[:frames])
    return out


def _classifiers(
    checkpoint: str | None, model_dir: str | None, arch: str, threads: int, work: Path
) -> dict[str, MaskClassifier]:
    """PyTorch eager, ONNX float and ONNX int8: ``model_dir``'s ``model.onnx`` and
    ``model.int8.onnx`` (from ``export --int8``), else exported here from ``checkpoint`` (or a
    random-init ``arch``: same cost) with int8 calibrated on LFW-mini faces."""
    if checkpoint:
        model, meta = load_model(checkpoint, "cpu")
    else:
        model, _ = build_model(arch, pretrained=False, verbose=False)
        meta = {"arch": arch, "threshold": 0.5}
    eager = MaskClassifier.from_model(model.eval(), meta)
    if model_dir:
        folder = Path(model_dir)
    else:
        folder = work / "export"
        calib = eager.preprocess([decode_rgb(b) for b in bench_faces(32)])
        export_module(model, meta, folder, ("onnx",), parity_images=calib[:8])
        quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calib)
    return {
        "pytorch": eager,
        "onnx": MaskClassifier(folder / "model.onnx", threads=threads),
        "int8": MaskClassifier(folder / "model.int8.onnx", threads=threads),
    }


KIOSK_COLUMNS = {
    "setting": "{:44s}",
    "video": "{:8s}",
    "fps": "{:>9.1f}",
    "p50_ms": "{:>8.1f}",
    "p95_ms": "{:>8.1f}",
    "faces_per_frame": "{:>16.2f}",
    "classified_per_frame": "{:>21.2f}",
}
PREDICT_COLUMNS = {
    "path": "{:44s}",
    "faces_per_s": "{:>12.1f}",
    "no_face": "{:>8d}",
    "agreement": "{:>10.4f}",
    "accuracy": "{:>9.4f}",
}


def format_table(rows: list[dict], columns: dict[str, str]) -> str:
    """Rows as aligned text, one column per key of ``columns`` (its format), keys as headers."""
    widths = {k: len(f.format(rows[0][k])) for k, f in columns.items()}
    head = " ".join(
        k.ljust(widths[k]) if f.endswith("s}") else k.rjust(widths[k]) for k, f in columns.items()
    )
    return "\n".join([head] + [" ".join(f.format(r[k]) for k, f in columns.items()) for r in rows])


def _stats(ms: list[float], faces: int, frames: int) -> dict:
    a = np.asarray(ms)
    return {
        "fps": round(1e3 / float(a.mean()), 1),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "faces_per_frame": round(faces / max(1, frames), 2),
    }


def bench_kiosk(
    checkpoint: str | None = None,
    model_dir: str | None = None,
    arch: str = "resnet50",
    threads: int = 2,
    frames: int = 60,
    rounds: int = 3,
    photos: str = str(PHOTOS_DIR),
    crops: int = 200,
    realdev: str = str(REALDEV_DIR),
    classify_every: int = 3,
) -> dict:
    """Both tables, printed and returned (``kiosk``, ``predict``).

    Kiosk: every setting runs the same two videos (``frames`` frames each, decoded from MP4)
    through :func:`maskdet.deploy.kiosk.run_kiosk` (decode, detect, crop, classify every face of every
    frame in one batch, track, draw), ``rounds`` times in turns, after a warm-up; the rows pool
    all frames. The last row re-classifies a tracked face only every ``classify_every`` frames
    (reported on its own, not the kiosk's goal). Predict: ``crops`` real crops of ``realdev``
    (evenly spaced through its labels.csv, both classes; 0 skips) through
    :func:`maskdet.deploy.predict.predict_paths`: today's path (MTCNN on the padded crop upscaled to
    640, PyTorch, one face at a time) against YuNet at the crop's own scale with batches of 32;
    label agreement with today's labels, and accuracy on realdev's own labels, per engine.
    ``frames=0`` skips the kiosk table, ``crops=0`` the predict table.
    """
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    load_before = os.getloadavg()
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    clfs = _classifiers(checkpoint, model_dir, arch, threads, work)
    kiosk_rows = bench_frames(clfs, work, photos, frames, rounds, classify_every) if frames else []
    predict_rows = bench_predict_crops(clfs, realdev, crops) if crops else []
    tmp.cleanup()
    omp = " ".join(f"{k}={os.environ.get(k)}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"))
    model = checkpoint or model_dir or f"{arch} (random init)"
    load = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(load_before, os.getloadavg()))
    print(f"load average 1/5/15 min, before/after: {load} ({os.cpu_count()} CPUs)")
    if kiosk_rows:
        print(
            f"kiosk end to end on 640x480 MP4 clips of real photos ({frames} frames, {rounds} "
            f"rounds; {threads} threads, {omp}; YuNet at {DETECT_SIZE['frame']} px; {model})"
        )
        print(format_table(kiosk_rows, KIOSK_COLUMNS))
    if predict_rows:
        print(
            f"\npredict on {predict_rows[0]['crops']} real face crops ({realdev}; {threads} "
            f"threads, {omp}; {model}); agreement: the same label as today's path; accuracy: "
            "against the crops' own labels"
        )
        print(format_table(predict_rows, PREDICT_COLUMNS))
    return {"kiosk": kiosk_rows, "predict": predict_rows}


def bench_frames(
    clfs: dict[str, MaskClassifier],
    work: Path,
    photos: str,
    frames: int,
    rounds: int,
    classify_every: int,
) -> list[dict]:
    """The kiosk table: every setting on both videos, ``rounds`` times in turns."""
    videos = _videos(work, photos, frames)
    mtcnn, yunet = FaceDetector("mtcnn"), FaceDetector(detect_size=DETECT_SIZE["frame"])
    settings = {
        "MTCNN + PyTorch (today)": (mtcnn, "pytorch", 1),
        "YuNet + ONNX float": (yunet, "onnx", 1),
        "YuNet + ONNX int8": (yunet, "int8", 1),
        f"YuNet + ONNX int8, classify every {classify_every}": (yunet, "int8", classify_every),
    }

    def measure(name: str, video: Path):
        det, engine, every = settings[name]

        def one(_round: int) -> dict:
            return run_kiosk(video, clfs[engine], log=None, detector=det, classify_every=every)

        return one

    for det, engine, _ in settings.values():  # warm-up: thread pools, first calls
        run_kiosk(videos["1 face"], clfs[engine], log=None, detector=det, max_frames=5)
    runs = in_turns({(n, v): measure(n, p) for n in settings for v, p in videos.items()}, rounds)
    kiosk_rows = []
    for (name, video), results in runs.items():
        ms = [t for r in results for t in r["ms"]]
        n_frames = sum(r["frames"] for r in results)
        row = {
            "setting": name,
            "video": video,
            **_stats(ms, sum(r["faces"] for r in results), n_frames),
        }
        row["classified_per_frame"] = round(sum(r["classified"] for r in results) / n_frames, 2)
        kiosk_rows.append(row)
    return kiosk_rows


def bench_predict_crops(
    classifiers: dict[str, MaskClassifier], realdev: str | os.PathLike, n: int
) -> list[dict]:
    """Faces/s of ``predict`` on ``n`` real crops and label agreement with today's path."""
    with open(Path(realdev) / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    paths, truth = [], []
    for label in ("1", "0"):
        rs = [r for r in rows if r["label"] == label]
        idx = np.linspace(0, len(rs) - 1, min(len(rs), n // 2)).astype(int)
        paths += [Path(realdev) / rs[i]["path"] for i in idx]
        truth += [CLASS_NAMES[int(label)]] * len(idx)
    yunet = FaceDetector(detect_size=DETECT_SIZE["crop"])
    paths_run = {
        "MTCNN + PyTorch, one at a time (today)": (FaceDetector("mtcnn"), "pytorch", 1),
        "YuNet + PyTorch, batches of 32": (yunet, "pytorch", 32),
        "YuNet + ONNX float, batches of 32": (yunet, "onnx", 32),
        "YuNet + ONNX int8, batches of 32": (yunet, "int8", 32),
    }
    out, ref = [], None
    for name, (det, engine, batch) in paths_run.items():
        t0 = time.perf_counter()
        got = predict_paths(classifiers[engine], paths, detector=det, batch_size=batch)
        seconds = time.perf_counter() - t0
        labels = [r["label"] for r in got]
        ref = ref or labels
        out.append(
            {
                "path": name,
                "crops": len(paths),
                "faces_per_s": round(len(got) / seconds, 1),
                "no_face": sum(r["status"] == "no_face" for r in got),
                "agreement": float(np.mean([a == b for a, b in zip(labels, ref)])),
                "accuracy": float(np.mean([a == b for a, b in zip(labels, truth)])),
            }
        )
    return out
