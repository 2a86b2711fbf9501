"""Write the indexes of the evaluation sets that Colab downloads (maskdet/indexes/*.csv).

The indexes are metadata, not images: for the real set, one row per crop of ``../shared/realdev``
(its file, label or worn-wrong category, the source photo with its sha256 and size, the annotated
box read from the photo's Pascal VOC xml, and the sha256 of the crop's pixels, so that a build can
say how many crops match the reference); for chapter 06's photos, one row per chosen photo (file,
label, path in the source, sha256, size, source and licence).

    python tools/make_eval_indexes.py realdev --realdev ../shared/realdev --checkout JOL_DIR
    python tools/make_eval_indexes.py photos --checkout KAGGLE_DIR

``JOL_DIR``: a checkout of jolignier/face-mask-dataset-ilc-2021 at the commit of the download
table (JPEGImages/ and annotations/). ``KAGGLE_DIR``: a checkout of the download table's copy of
the Kaggle "Face Mask Detection" archive (archive/images/ and archive/annotations/).
"""

from __future__ import annotations

import argparse
import csv
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskdet.core import download as dl  # noqa: E402
from maskdet.evaluation.evalsets import BOX, PHOTO_COLUMNS, REAL_COLUMNS, pixel_digest, write_index  # noqa: E402

PHOTOS = {
    # masked: every annotated face wears a mask; several with two to five people
    "masked": (
        101,
        106,
        123,
        138,
        140,
        141,
        142,
        160,
        165,
        175,
        177,
        18,
        191,
        193,
        200,
        208,
        215,
        230,
    ),
    # unmasked: no annotated face wears a mask (two hold one in their hand)
    "unmasked": (121, 289, 521, 785, 125, 128, 343, 540, 618, 837, 154, 609),
    # street scenes with masked and unmasked people (no photo label)
    "mixed": (0, 148, 502, 698),
}
"""The Kaggle photos chosen for chapter 06 (numbers of ``maksssksksssN.png``), picked by eye
from the ones whose faces are at least 40 px (mixed: 30 px)."""
LABEL = {"masked": "wearing_mask", "unmasked": "not_wearing_mask", "mixed": ""}
KAGGLE = "Face Mask Detection (Larxel / andrewmvd, Kaggle), {name}"


def boxes(xml: Path) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(class, box) of every object of a Pascal VOC file, in file order (the ``#N`` index)."""
    root = ET.parse(xml).getroot()
    return [
        (o.findtext("name"), tuple(float(o.find("bndbox").findtext(k)) for k in BOX))
        for o in root.iter("object")
    ]


def realdev_rows(realdev: Path, checkout: Path) -> list[dict]:
    listed = [(r, "") for r in csv.DictReader(open(realdev / "labels.csv", encoding="utf-8"))]
    listed += [
        ({**r, "path": "worn/" + r["path"]}, r["category"])
        for r in csv.DictReader(open(realdev / "worn" / "labels.csv", encoding="utf-8"))
    ]
    rows, digests = [], {}
    for r, category in listed:
        photo, _, box = r["source_path"].partition("#")
        stem = Path(photo).stem
        _, xyxy = boxes(checkout / "annotations" / f"{stem}.xml")[int(box)]
        if photo not in digests:
            digests[photo] = (dl.sha256sum(checkout / photo), (checkout / photo).stat().st_size)
        sha, size = digests[photo]
        pixels = pixel_digest(np.asarray(Image.open(realdev / r["path"]).convert("RGB")))
        rows.append(
            {
                "path": r["path"],
                "label": r.get("label", "") if not category else "",
                "category": category,
                "photo": photo,
                "sha256": sha,
                "bytes": size,
                "box": box,
                **{k: f"{v:g}" for k, v in zip(BOX, xyxy)},
                "pixels": pixels,
            }
        )
    return rows


def photo_rows(checkout: Path) -> list[dict]:
    rows = []
    for kind, numbers in PHOTOS.items():
        for i, n in enumerate(numbers, 1):
            path = f"archive/images/maksssksksss{n}.png"
            faces = Counter(
                c for c, _ in boxes(checkout / f"archive/annotations/maksssksksss{n}.xml")
            )
            rows.append(
                {
                    "file": f"{kind}_{i:02d}.png",
                    "label": LABEL[kind],
                    "path": path,
                    "sha256": dl.sha256sum(checkout / path),
                    "bytes": (checkout / path).stat().st_size,
                    "source": KAGGLE.format(name=Path(path).name)
                    + " ("
                    + ", ".join(f"{v} {k}" for k, v in sorted(faces.items()))
                    + ")",
                    "licence": "CC0 1.0",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", choices=("realdev", "photos"))
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--realdev", type=Path, default=ROOT.parent / "shared" / "realdev")
    a = ap.parse_args(argv)
    out = dl.index_path(a.set)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.set == "realdev":
        write_index(out, realdev_rows(a.realdev, a.checkout), REAL_COLUMNS)
    else:
        write_index(out, photo_rows(a.checkout), PHOTO_COLUMNS)
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
