"""Stage 06: real photos. Every face found and classified, per-photo agreement with the
folder's labels, the photo and failure grids, and the faces to explain with Grad-CAM.

The predictions come from :func:`maskdet.deploy.predict.predict_paths` (one row per face, with its crop
when ``keep_crops``); this module summarises and draws them for the qualitative chapter.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image as IPImage
from IPython.display import Javascript, display
from matplotlib.patches import Rectangle
from PIL import Image

from ..core.constants import PREDS_DIRNAME
from ..core.imageio import read_rgb
from ..core.inference import read_predictions
from ..evaluation.evaluate import confident_mistakes
from .detect import DetectedFace
from .gradcam import gallery


def upload_photos(folder: str | os.PathLike = "my_photos") -> str:
    """Colab: pick photos from your computer into ``folder``; returns the folder."""
    from google.colab import files  # exists on Colab only

    os.makedirs(folder, exist_ok=True)
    for name, data in files.upload().items():
        Path(folder, name).write_bytes(data)
    return str(folder)


WEBCAM_JS = """
async function takePhoto(quality) {
  const div = document.createElement('div');
  const button = document.createElement('button');
  button.textContent = 'Take the photo';
  div.appendChild(button);
  const video = document.createElement('video');
  video.style.display = 'block';
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  document.body.appendChild(div);
  div.appendChild(video);
  video.srcObject = stream;
  await video.play();
  google.colab.output.setIframeHeight(document.documentElement.scrollHeight, true);
  await new Promise((resolve) => button.onclick = resolve);
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  stream.getVideoTracks()[0].stop();
  div.remove();
  return canvas.toDataURL('image/jpeg', quality);
}
"""
"""The browser side of :func:`webcam_snapshot` (Colab's JavaScript camera capture)."""


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def webcam_snapshot(folder: str | os.PathLike = "my_photos", quality: float = 0.9) -> Path:
    """Colab: a photo from your webcam (the browser asks for the camera; a button takes it),
    saved as ``folder/webcam_N.jpg``; returns its path."""
    from google.colab import output  # exists on Colab only

    display(Javascript(WEBCAM_JS))
    data = output.eval_js(f"takePhoto({quality})")
    os.makedirs(folder, exist_ok=True)
    path = Path(folder) / f"webcam_{len(list(Path(folder).glob('webcam_*.jpg')))}.jpg"
    path.write_bytes(base64.b64decode(data.split(",", 1)[1]))
    return path


def clip_gif(
    frames: Sequence[np.ndarray],
    fps: float = 15.0,
    width: int = 320,
    every: int = 2,
    colours: int = 64,
) -> bytes:
    """RGB frames as an animated GIF (``width`` px wide), to play in any notebook viewer: every
    ``every``-th frame, shown as long as the frames it stands for (same speed), in ``colours``
    colours (one palette, from the middle frame), so the saved notebook stays small."""
    h, w = frames[0].shape[:2]
    size = (width, round(h * width / w))
    kept = [Image.fromarray(f).resize(size, Image.Resampling.BILINEAR) for f in frames[::every]]
    palette = kept[len(kept) // 2].quantize(colours, method=Image.Quantize.MEDIANCUT)
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in kept]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 * every / fps),
        loop=0,
        optimize=True,
    )
    return buf.getvalue()


def tracks_table(log: str | os.PathLike) -> pd.DataFrame:
    """One row per person of a kiosk log (:func:`maskdet.deploy.kiosk.run_kiosk`): frames seen, how
    often the decision changed, the final probability and decision."""
    with open(log, encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    changes = pd.Series([x["track"] for x in lines if x["event"] == "decision"]).value_counts()
    rows = [x for x in lines if x["event"] == "track_end"]
    table = pd.DataFrame(rows).drop(columns=["event"]).set_index("track")
    table.insert(3, "decision_changes", changes.reindex(table.index).fillna(0).astype(int) - 1)
    return table


def detector_table(rows: list[dict]) -> pd.DataFrame:
    """:func:`maskdet.deploy.detect.compare_detectors` rows per detector and kind of photo (``masked*``
    / ``unmasked*`` file names): photos, faces, photos with a face, seconds per photo."""
    cmp = pd.DataFrame(rows)
    cmp["kind"] = np.where(
        cmp.file.str.startswith("masked"),
        "masked photos",
        np.where(cmp.file.str.startswith("unmasked"), "unmasked photos", "photos"),
    )
    return (
        cmp.groupby(["backend", "kind"])
        .agg(
            photos=("file", "count"),
            faces=("faces", "sum"),
            photos_with_a_face=("faces", lambda f: int((f > 0).sum())),
            seconds_per_photo=("seconds", "mean"),
        )
        .round(3)
    )


def faces_table(rows: list[dict]) -> pd.DataFrame:
    """The face rows without their crops."""
    return pd.DataFrame([{k: v for k, v in r.items() if k != "crop"} for r in rows])


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


def photo_grid(rows: list[dict], threshold: float, show: int = 20, cols: int = 5):
    """The first ``show`` photos (0: all) with their face boxes and probabilities."""
    photos = sorted({r["path"] for r in rows})
    photos = photos[: show or len(photos)]
    n_rows = max(1, math.ceil(len(photos) / cols))
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(3.4 * cols, 3.2 * n_rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path in zip(axes.ravel(), photos):
        faces = [r for r in rows if r["path"] == path and r["status"] == "ok"]
        boxes = [
            DetectedFace(
                tuple(float(r[k]) for k in ("left", "top", "right", "bottom")),
                float(r["det_score"]),
            )
            for r in faces
        ]
        probs = [float(r["prob_mask"]) for r in faces]
        draw_faces(read_rgb(path), boxes, probs, threshold, ax=ax, title=Path(path).name)
    return fig


def agreement_table(summary: list[dict]) -> pd.DataFrame | None:
    """Per photo label: photos, faces, faces called masked and the mean agreement (None when
    the folder has no labels)."""
    s = pd.DataFrame(summary)
    if "agree" not in s:
        return None
    return (
        s.dropna(subset=["agree"])
        .groupby("photo_label")
        .agg(
            photos=("file", "count"),
            faces=("faces", "sum"),
            called_masked=("masked", "sum"),
            mean_agree=("agree", "mean"),
        )
        .round(3)
    )


def failures(rows: list[dict], summary: list[dict], k: int = 12) -> list[dict]:
    """Faces whose predicted label differs from their photo's label, most confident first."""
    label = {s["file"]: s["photo_label"] for s in summary}
    bad = [
        r
        for r in rows
        if r["status"] == "ok"
        and label.get(Path(r["path"]).name)
        and r["label"] != label[Path(r["path"]).name]
    ]
    bad.sort(
        key=lambda r: -abs(float(r["prob_mask"]) - (label[Path(r["path"]).name] == "wearing_mask"))
    )
    return bad[:k]


def failure_grid(bad: list[dict], cols: int = 6):
    """The crops of :func:`failures` with the photo's name and the probability of a mask."""
    n_rows = max(1, math.ceil(len(bad) / cols))
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(13, 2.6 * n_rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), bad):
        ax.imshow(r["crop"])
        title = f"{Path(r['path']).stem}\np={float(r['prob_mask']):.2f}"
        ax.set_title(title, fontsize=8, color="tab:red")
    return fig


def show_jpeg(fig, quality: int = 80, dpi: float = 100) -> None:
    """Show a figure of photos in the notebook as a JPEG, then close it: as a PNG (the inline
    default) photos take several times the bytes, in the saved notebook and in report.html."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(IPImage(data=buf.getvalue(), format="jpeg"))


def show_gradcam(classifier, crops: list[np.ndarray], titles: list[str], title: str) -> None:
    """Show the Grad-CAM gallery (:func:`maskdet.deploy.gradcam.gallery`) of ``crops`` for the
    classifier's predicted class, as a JPEG (:func:`maskdet.evaluation.figures.show_jpeg`)."""
    show_jpeg(gallery(classifier.model, crops, classifier.preprocess, titles, title=title))


def gradcam_cases(run_dir: str | os.PathLike, right: int = 3, wrong: int = 6):
    """Test faces to explain: the first ``right`` right answers of each class and the ``wrong``
    most confident mistakes (:func:`maskdet.evaluation.evaluate.confident_mistakes`) at the val threshold,
    from stage 05's ``eval_test.json`` and ``preds/test_eval.csv``. Returns (crops, titles), or
    None before stage 05 has run."""
    ev = Path(run_dir) / "eval_test.json"
    if not ev.exists():
        return None
    res = json.loads(ev.read_text())
    d = read_predictions(Path(run_dir) / PREDS_DIRNAME / "test_eval.csv")
    thr = res["at_threshold"]["threshold"]
    rows = [{"path": p, "label": y, "prob": q} for p, y, q in zip(d["path"], d["label"], d["prob"])]
    ok = [r for r in rows if (r["prob"] >= thr) == (r["label"] == 1)]
    picked = [(r, True) for k in (0, 1) for r in [r for r in ok if r["label"] == k][:right]]
    mistakes = confident_mistakes(d["path"], d["label"], d["prob"], thr, wrong)
    picked += [(m, False) for m in mistakes]
    crops = [read_rgb(Path(res["data_dir"]) / r["path"]) for r, _ in picked]
    titles = [
        f"{'RIGHT' if good else 'WRONG'} y={r['label']} p={r['prob']:.2f}" for r, good in picked
    ]
    return crops, titles


def top_faces(rows: list[dict], k: int = 12) -> tuple[list[np.ndarray], list[str]]:
    """The ``k`` faces the detector is surest of, with their photo, index and p(mask)."""
    faces = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -float(r["det_score"]))
    faces = faces[:k]
    titles = [f"{Path(r['path']).stem}#{r['face']} p={float(r['prob_mask']):.2f}" for r in faces]
    return [r["crop"] for r in faces], titles


def draw_faces(
    rgb: np.ndarray,
    faces: list[DetectedFace],
    probs: list[float] | None = None,
    threshold: float = 0.5,
    ax=None,
    title: str = "",
):
    """A photo with each face box (green = mask, red = no mask) and p(mask)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * rgb.shape[0] / rgb.shape[1]))
    ax.imshow(rgb)
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = f.box
        p = None if probs is None else probs[i]
        color = "yellow" if p is None else ("lime" if p >= threshold else "red")
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=color, lw=1.5))
        label = f"{i}" if p is None else f"{i}: {p:.2f}"
        ax.text(
            x0,
            y0 - 2,
            label,
            color="black",
            fontsize=7,
            va="bottom",
            bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "lw": 0},
        )
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return ax.figure


def real_results(run_dir: str | os.PathLike) -> dict | None:
    """Stage 05's real-face evaluation of the run (``RUN_DIR/eval_real.json``), or None."""
    path = Path(run_dir) / "eval_real.json"
    return json.loads(path.read_text()) if path.exists() else None


def real_error_figure(real: dict):
    """The real faces' error analysis (:func:`maskdet.core.real.error_analysis` in ``eval_real.json``):
    masked faces found (recall) and unmasked faces called masked (false positives) at the val
    threshold, per lower-face colour, brightness and sharpness (a proxy for the face's size)."""
    analysis = real["error_analysis"]
    fig, axes = plt.subplots(1, len(analysis), figsize=(5 * len(analysis), 3.8), squeeze=False)
    for ax, (name, table) in zip(axes[0], analysis.items()):
        keys = list(table)
        x = np.arange(len(keys))
        rec = [table[k]["recall"] for k in keys]
        fpr = [table[k]["false_positive_rate"] for k in keys]
        ax.bar(x - 0.2, np.nan_to_num(rec), 0.4, label="masked found (recall)", color="tab:green")
        ax.bar(x + 0.2, np.nan_to_num(fpr), 0.4, label="unmasked called masked", color="tab:red")
        for i, k in enumerate(keys):
            n = f"{table[k]['masked']}/{table[k]['unmasked']}"
            ax.text(i, 1.02, n, ha="center", fontsize=7)
        ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=8)
        ax.set(ylim=(0, 1.12), title=f"by {name.replace('_', ' ')} (n masked/unmasked)")
    axes[0][0].legend(fontsize=7, loc="center left")
    fig.tight_layout()
    return fig
