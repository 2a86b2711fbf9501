"""Sources for the evaluation sets made from real data of ../shared, and a local HTTP server.

CI has no copy of the upstream photos of the real set, so a test source is made from real crops
of ``../shared/realdev``: each "photo" holds two crops pasted on a noise background, boxed so that
:func:`maskdet.evaluation.evalsets.crop_face` cuts exactly the crop again (a square of 1.5x the box, 128 px,
no resampling). Chapter 06's test photos are real photos of ``../shared/qualitative``. Indexes of
the package's format list them; the server plays the source and its faults.
"""

from __future__ import annotations

import csv
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from maskdet.core import download as dl
from maskdet.evaluation.evalsets import PHOTO_COLUMNS, REAL_COLUMNS, pixel_digest, write_index

from .conftest import QUALITATIVE, REALDEV

SLOTS = ((40, 20), (230, 36))
"""Where the two crops of a test photo go (left, top); the photo is 400 x 190."""


def real_source(folder: Path, per_class: int = 6, worn: int = 2) -> Path:
    """A test source of the real set in ``folder`` (``JPEGImages/*.png``, two crops each) from the
    first crops of each class of ../shared/realdev; returns its index CSV."""
    with open(REALDEV / "labels.csv", newline="", encoding="utf-8") as fh:
        labelled = list(csv.DictReader(fh))
    with open(REALDEV / "worn" / "labels.csv", newline="", encoding="utf-8") as fh:
        worn_rows = list(csv.DictReader(fh))[:worn]
    picked = [r for r in labelled if r["label"] == "1"][:per_class]
    picked += [r for r in labelled if r["label"] == "0"][:per_class]
    crops = [(r["path"], r["label"], "") for r in picked]
    crops += [("worn/" + r["path"], "", r["category"]) for r in worn_rows]
    rng = np.random.default_rng(0)
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(0, len(crops), 2):
        photo_rel = f"JPEGImages/test_{i // 2:03d}.png"
        canvas = rng.integers(0, 256, (190, 400, 3), dtype=np.uint8)
        pair = crops[i : i + 2]
        for (left, top), (path, *_) in zip(SLOTS, pair):
            canvas[top : top + 128, left : left + 128] = np.asarray(
                Image.open(REALDEV / path).convert("RGB")
            )
        Image.fromarray(canvas).save(folder / photo_rel)
        for box, ((left, top), (path, label, category)) in enumerate(zip(SLOTS, pair)):
            crop = np.asarray(Image.open(REALDEV / path).convert("RGB"))
            half = 64 / 1.5  # 1.5x the box is the 128 px crop
            cx, cy = left + 64, top + 64
            rows.append(
                {
                    "path": path,
                    "label": label,
                    "category": category,
                    "photo": photo_rel,
                    "sha256": dl.sha256sum(folder / photo_rel),
                    "bytes": (folder / photo_rel).stat().st_size,
                    "box": box,
                    "xmin": repr(cx - half),
                    "ymin": repr(cy - half),
                    "xmax": repr(cx + half),
                    "ymax": repr(cy + half),
                    "pixels": pixel_digest(crop),
                }
            )
    index = folder / "realdev_index.csv"
    write_index(index, rows, REAL_COLUMNS)
    return index


def photo_source(folder: Path, masked: int = 6, unmasked: int = 4) -> Path:
    """A test source of chapter 06's photos in ``folder`` (``archive/images/``) from the real
    photos of ../shared/qualitative; returns its index CSV."""
    (folder / "archive" / "images").mkdir(parents=True, exist_ok=True)
    names = [f"masked_{i:02d}.jpg" for i in range(1, masked + 1)]
    names += [f"unmasked_{i:02d}.jpg" for i in range(1, unmasked + 1)]
    rows = []
    for name in names:
        rel = f"archive/images/{name}"
        shutil.copyfile(QUALITATIVE / name, folder / rel)
        rows.append(
            {
                "file": name,
                "label": "wearing_mask" if name.startswith("masked") else "not_wearing_mask",
                "path": rel,
                "sha256": dl.sha256sum(folder / rel),
                "bytes": (folder / rel).stat().st_size,
                "source": f"test copy of ../shared/qualitative/{name}",
                "licence": "tests only",
            }
        )
    index = folder / "photos_index.csv"
    write_index(index, rows, PHOTO_COLUMNS)
    return index


class FolderHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``root`` with ``Range`` support; ``faults`` maps a path (as requested, without the
    leading slash) to ``corrupt`` (bytes flipped), ``cut`` (the connection closes half-way, once)
    or ``missing`` (404). Every request is logged as (path, Range header)."""

    root = Path(".")
    faults: dict[str, str] = {}
    log: list[tuple[str, str]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        rel = self.path.lstrip("/")
        rng = self.headers.get("Range") or ""
        type(self).log.append((rel, rng))
        fault = self.faults.get(rel, "")
        path = self.root / rel
        if fault == "missing" or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if fault == "corrupt":
            data = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "cut":
            del type(self).faults[rel]  # the next request succeeds
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


def serve(root: Path):
    """Start a server of ``root`` on 127.0.0.1; returns (base URL, handler class, server)."""
    handler = type("Handler", (FolderHandler,), {"root": root, "faults": {}, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/", handler, httpd
