TITLE = "06 · Real photos: faces, masks, Grad-CAM, failures"

INTRO = """
The model was trained on *synthetic* masks drawn onto aligned LFW faces. This chapter tries it on
**real photos**: street scenes with several people wearing real masks, and celebrity photos
without masks (`../shared/qualitative/` here; on Colab, upload your own). Then it asks *where*
the network looks (Grad-CAM) and collects the failures.

Steps, with `maskdet.detect`, `maskdet.predict` and `maskdet.gradcam`:

1. **Find every face.** dlib's HOG detector (used to place synthetic masks on LFW) was trained on
   unmasked faces and misses most masked ones; we use **MTCNN** (facenet-pytorch, weights inside
   the package) and compare the two on the photos.
2. **Crop each face with the training framing.** Stage 01 stored the central 64% of each aligned
   LFW image; a detected face is cut as the square that the same detector's box maps to on LFW
   (calibrated on 300 LFW images), resized to 128x128, and the classifier takes its 112x112
   centre, exactly as in training.
3. **Classify** (threshold chosen on val) and draw boxes with the probability of a mask.
4. **Grad-CAM** heat maps on right and wrong answers, a gallery of failures, and limitations.

The kiosk version of this notebook is one command:
`python -m maskdet predict --photos --checkpoint RUN_DIR/best.pt --out preds.csv PHOTOS...`.
"""

PARAMS = """
DATA_DIR = "data/demo"
RUN_DIR = "runs/demo"
PHOTOS_DIR = "../shared/qualitative"  # a folder of photos (on Colab, UPLOAD True adds your own)
UPLOAD = False
DETECTOR = "mtcnn"  # mtcnn | hog (the baseline)
SHOW_PHOTOS = 20  # photos drawn with their boxes
"""

CELLS = [
    (
        "code",
        """
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from maskdet import detect, gradcam, predict
from maskdet.imageio import read_rgb

if not (Path(RUN_DIR) / "best.pt").exists():
    raise FileNotFoundError(f"{RUN_DIR}/best.pt not found: run notebook 04_train_resnet50 first")
if UPLOAD:  # Colab: pick photos from your computer
    from google.colab import files

    PHOTOS_DIR = "my_photos"
    os.makedirs(PHOTOS_DIR, exist_ok=True)
    for name, data in files.upload().items():
        Path(PHOTOS_DIR, name).write_bytes(data)
if not Path(PHOTOS_DIR).is_dir():
    raise FileNotFoundError(f"{PHOTOS_DIR} is not a folder: set PHOTOS_DIR, or UPLOAD = True on Colab")
classifier = predict.MaskClassifier(Path(RUN_DIR) / "best.pt")
detector = detect.FaceDetector(DETECTOR)
print(f"{classifier.meta['arch']} from epoch {classifier.meta.get('epoch')}, val AUC "
      f"{classifier.meta.get('val_auc', float('nan')):.4f}, threshold {classifier.threshold:.3f}")
""",
    ),
    (
        "md",
        """
## Which face detector?

Faces found per photo folder by dlib's HOG (frontal, upsampled) and by MTCNN. On the course's 30
street photos with real masks HOG finds 11 faces in 11 photos, MTCNN 48 faces in 27 photos; on
the 20 unmasked photos both find the main face in every photo (HOG 21 faces, MTCNN 26, a few of
them false boxes on background patterns). HOG fails on masked faces because its template relies
on the mouth and chin edges that the mask hides.
""",
    ),
    (
        "code",
        """
cmp = pd.DataFrame(detect.compare_detectors(PHOTOS_DIR))
cmp["kind"] = np.where(cmp.file.str.startswith("masked"), "masked photos",
                       np.where(cmp.file.str.startswith("unmasked"), "unmasked photos", "photos"))
cmp.groupby(["backend", "kind"]).agg(photos=("file", "count"), faces=("faces", "sum"),
                                     photos_with_a_face=("faces", lambda f: int((f > 0).sum())),
                                     seconds_per_photo=("seconds", "mean")).round(3)
""",
    ),
    (
        "md",
        """
## Every face, classified

Green box: called *wearing a mask* (probability at or above the val threshold); red: *no mask*.
The number is the probability of a mask.
""",
    ),
    (
        "code",
        """
rows = predict.predict_paths(classifier, [PHOTOS_DIR], photos=True, detector=detector, keep_crops=True)
table = pd.DataFrame([{k: v for k, v in r.items() if k != "crop"} for r in rows])
photos = sorted({r["path"] for r in rows})
show = photos[: SHOW_PHOTOS or len(photos)]
cols = 5
fig, axes = plt.subplots((len(show) + cols - 1) // cols, cols, figsize=(3.4 * cols, 3.2 * ((len(show) + cols - 1) // cols)),
                         squeeze=False)
for ax in axes.ravel():
    ax.axis("off")
for ax, path in zip(axes.ravel(), show):
    faces = [r for r in rows if r["path"] == path and r["status"] == "ok"]
    boxes = [detect.DetectedFace(tuple(float(r[k]) for k in ("left", "top", "right", "bottom")), float(r["det_score"]))
             for r in faces]
    detect.draw_faces(read_rgb(path), boxes, [float(r["prob_mask"]) for r in faces], classifier.threshold, ax=ax,
                      title=Path(path).name)
fig.tight_layout()
table.drop(columns=["framing"]).head(12)
""",
    ),
    (
        "md",
        """
## How often is the model right on real photos?

The folder's `labels.csv` labels each *photo* (street scenes with masks, celebrity photos
without). A photo's label is what most people in it wear, so per face it is an approximation;
`agree` is the share of a photo's faces whose predicted label matches it. Measured on the shared
photos: the CPU demo model (6 epochs) agreed on 73% of the masked photos' faces and 97.5% of the
unmasked ones; a model trained for 50 epochs on a GPU on the same 600 people, perfect on their
synthetic test split, on 80% and 100%. Real masks are harder than the synthesizer's.
""",
    ),
    (
        "code",
        """
summary = pd.DataFrame(predict.photo_summary(rows, Path(PHOTOS_DIR) / "labels.csv"))
if "agree" in summary:
    by = summary.dropna(subset=["agree"]).groupby("photo_label").agg(photos=("file", "count"), faces=("faces", "sum"),
                                                                    called_masked=("masked", "sum"),
                                                                    mean_agree=("agree", "mean"))
    display(by.round(3))
summary.sort_values("agree" if "agree" in summary else "file").head(15)
""",
    ),
    (
        "md",
        """
## Where does the network look? Grad-CAM

Grad-CAM weights the last convolutional stage's feature maps by how much they raise the score of
the predicted class, and shows the result as a heat map over the face (red = most evidence). A
model that has learned *the mask* should look at the mouth and nose; one that has learned the
synthesizer's artefacts may look at mask edges, or anywhere. First the test faces (right and
wrong answers), then faces from the photos.
""",
    ),
    (
        "code",
        """
import json

ev = Path(RUN_DIR) / "eval_test.json"
if ev.exists():
    res = json.loads(ev.read_text())
    preds = pd.read_csv(Path(RUN_DIR) / "preds" / "test_eval.csv")
    thr = res["at_threshold"]["threshold"]
    preds["right"] = (preds.prob >= thr) == (preds.label == 1)
    right = pd.concat([preds[preds.right & (preds.label == k)].head(3) for k in (0, 1)])
    wrong = preds[~preds.right].assign(conf=lambda d: (d.prob - d.label).abs()).sort_values("conf", ascending=False).head(6)
    pick = pd.concat([right, wrong])
    crops = [read_rgb(Path(res["data_dir"]) / p) for p in pick.path]
    titles = [f"{'RIGHT' if r else 'WRONG'} y={y} p={p:.2f}" for r, y, p in zip(pick.right, pick.label, pick.prob)]
    gradcam.gallery(classifier.model, crops, classifier.preprocess, titles, title="test faces: Grad-CAM of the predicted class")
else:
    print("run notebook 05 first for the test-set Grad-CAM")
""",
    ),
    (
        "code",
        """
faces = [r for r in rows if r["status"] == "ok"]
faces = sorted(faces, key=lambda r: -float(r["det_score"]))[:12]
if faces:
    titles = [f"{Path(r['path']).stem}#{r['face']} p={float(r['prob_mask']):.2f}" for r in faces]
    gradcam.gallery(classifier.model, [r["crop"] for r in faces], classifier.preprocess, titles,
                    title="faces from the photos: Grad-CAM of the predicted class");
""",
    ),
    (
        "md",
        """
## Failures

Faces from photos labelled *masked* that the model calls unmasked, and the reverse, most
confident first. (In street scenes some people really are unmasked, so a few "failures" are right.)
""",
    ),
    (
        "code",
        """
lab = dict(zip(summary.file, summary.photo_label))
bad = [r for r in rows if r["status"] == "ok" and lab.get(Path(r["path"]).name)
       and r["label"] != lab[Path(r["path"]).name]]
bad.sort(key=lambda r: -abs(float(r["prob_mask"]) - (lab[Path(r["path"]).name] == "wearing_mask")))
bad = bad[:12]
print(f"{len(bad)} faces disagree with their photo's label (most confident shown)")
if bad:
    fig, axes = plt.subplots((len(bad) + 5) // 6, 6, figsize=(13, 2.6 * ((len(bad) + 5) // 6)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), bad):
        ax.imshow(r["crop"])
        ax.set_title(f"{Path(r['path']).stem}\\np={float(r['prob_mask']):.2f}", fontsize=8, color="tab:red")
""",
    ),
    (
        "md",
        """
### Why it fails, and the limits of this model

- **Synthetic vs real masks.** Every mask seen in training was drawn by MaskTheFace or the
  builtin renderer onto a frontal, aligned face: clean outlines, uniform texture, a fixed fit.
  Real masks fold, shade, reflect light and come in patterns the templates never had. The
  augmentations (blur, JPEG, low resolution, colour jitter) narrow the gap but do not close it.
- **Masks worn below the nose or on the chin** are neither class in training: the model has no
  notion of *correctly* worn.
- **Hands, scarves, beards, microphones over the mouth** look like "something covering the lower
  face"; without such negatives in training they are easily called masks (and the reverse for
  dark masks on dark skin or skin-coloured masks).
- **Side views and tilted heads**: LFW deep-funneled faces are near-frontal and aligned; profiles
  and strong tilts are out of distribution, and the detector's box (hence the crop) is less
  regular for them.
- **Small, blurred faces in crowds**: faces of 15-20 pixels are upscaled to 128; the classifier
  then sees mostly blur.
- **Demographics of LFW**: mostly adult, white, male public figures photographed by the press;
  accuracy on other groups is not measured here and should not be assumed.
- **Faces the detector misses** are never classified: on the course photos MTCNN misses faces
  hidden behind a hand or a phone and some small faces at the back of crowds (and HOG misses most
  masked faces), so a kiosk must treat "no face found" as its own outcome.
""",
    ),
]
