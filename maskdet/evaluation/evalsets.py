"""The evaluation sets that Colab downloads: the real-mask crops and chapter 06's photos.

Where the project is built, ``../shared/realdev`` (real crops) and ``../shared/qualitative`` (real
photos) sit beside the checkout. Colab has no ``../shared``, so both can be made from their
public sources through the download table (:data:`maskdet.core.download.DOWNLOADS`):

- **realdev**: the 1,700 crops of ``../shared/realdev`` (``mask/``, ``nomask/``, ``worn/`` and
  their ``labels.csv``), cut again from the photos of the students' repository that they came
  from. The package's index (``indexes/realdev.csv``) lists every crop: its file, label or
  category, the photo (path, sha256, size), the annotated box and the sha256 of the crop's
  pixels. :func:`crop_face` cuts a crop as realdev was cut; :func:`build_realdev` fetches the
  photos (or reads a local checkout), cuts every crop and says how many match realdev pixel for
  pixel. No licence is stated upstream: the photos keep their owners' rights, so the set is for
  evaluation inside the project only and is never redistributed (each user fetches it from the
  source).
- **photos**: real photos of masked and unmasked people for chapter 06 (``indexes/photos.csv``:
  file, label, path, sha256, size, source and licence of each), from a set whose licence allows
  it; :func:`build_photos` fetches them into a folder with a ``labels.csv`` (file, label, source,
  licence, url) that chapter 06 reads.

:func:`real_dir` and :func:`photos_dir` resolve the notebooks' ``"auto"``: the shared copy where it
exists, else a set already built in ``data/``, else a download and build; when nothing can be
reached, one line says so and None is returned (the chapters go on without it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import download as dl
from ..core.constants import PHOTOS_DIR, REALDEV_DIR
from ..core.errors import one_line
from ..core.real import NATIVE_FRAMING, SIDE
from ..core.system import storage_path

REAL_OUT = "data/realdev"
"""Where ``REAL_DIR = "auto"`` builds the real set when there is no ``../shared/realdev``."""
PHOTOS_OUT = "data/photos"
"""Where ``PHOTOS_DIR = "auto"`` puts the photos when there is no ``../shared/qualitative``."""
BUILD_FILE = "build.json"
"""What a build writes last: the index it was built from, counts and every crop not built."""
BOX = ("xmin", "ymin", "xmax", "ymax")
REAL_COLUMNS = ("path", "label", "category", "photo", "sha256", "bytes", "box", *BOX, "pixels")
"""The real set's index: one row per crop (``label`` 1/0 for mask/nomask, ``category`` for
worn/), its photo (path in the repository, sha256, bytes), the box's index in the photo's xml and
the box, and :func:`pixel_digest` of the reference crop."""
PHOTO_COLUMNS = ("file", "label", "path", "sha256", "bytes", "source", "licence")


# ----------------------------------------------------------------------------- indexes


def read_index(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an index CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_index(
    path: str | os.PathLike, rows: list[dict], columns: tuple[str, ...], newline: str = "\n"
) -> None:
    """Write an index CSV (``columns`` in that order; the ``labels.csv`` files of a build end
    their lines with ``\r\n``, as Python's csv module and ``../shared/realdev`` do)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, lineterminator=newline)
        writer.writeheader()
        writer.writerows(rows)


def index_digest(path: str | os.PathLike) -> str:
    """The sha256 of an index file: a build made from another index is built again."""
    return dl.sha256sum(path)


def photo_files(rows: list[dict[str, str]], key: str = "photo") -> list[tuple[str, str, int]]:
    """(path, sha256, bytes) of each distinct source file of an index, in order."""
    seen: dict[str, tuple[str, str, int]] = {}
    for r in rows:
        seen.setdefault(r[key], (r[key], r["sha256"], int(r["bytes"])))
    return list(seen.values())


def pixel_digest(rgb: np.ndarray) -> str:
    """A short sha256 of a crop's RGB pixels (independent of how the PNG was compressed)."""
    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the crop


def crop_window(
    box: tuple[float, float, float, float], size: tuple[int, int], framing: float = NATIVE_FRAMING
) -> tuple[int, int, int, int]:
    """The square realdev cut for an annotated box (``xmin, ymin, xmax, ymax``) in a photo of
    ``size`` (width, height): ``framing`` x the box's longer side around its centre, no larger
    than the photo's shorter side, moved inside the photo where it would cross an edge; corners
    rounded to whole pixels."""
    x0, y0, x1, y1 = box
    width, height = size
    side = min(framing * max(x1 - x0, y1 - y0), width, height)
    left = min(max((x0 + x1) / 2 - side / 2, 0), width - side)
    top = min(max((y0 + y1) / 2 - side / 2, 0), height - side)
    return tuple(int(round(v)) for v in (left, top, left + side, top + side))


def open_photo(path: str | os.PathLike) -> Image.Image:
    """A photo as RGB, as realdev read it: the stored pixels (no EXIF rotation: the boxes were
    drawn on them), alpha dropped."""
    with Image.open(path) as im:
        return im.convert("RGB")


def crop_face(photo: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The ``SIDE`` x ``SIDE`` crop of one annotated face (:func:`crop_window`, bicubic)."""
    window = crop_window(box, photo.size)
    return photo.crop(window).resize((SIDE, SIDE), Image.Resampling.BICUBIC)


# ----------------------------------------------------------------------------- building


def _staging(out: Path) -> Path:
    """A fresh folder beside ``out`` to build in; ``out`` itself must be a build or absent."""
    if out.exists() and not (out / BUILD_FILE).is_file() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and was not built by maskdet (no {BUILD_FILE}): choose another --out"
        )
    work = out.with_name(f".{out.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def _swap_in(work: Path, out: Path) -> None:
    """Replace ``out`` (an earlier build, or nothing) by the finished ``work`` folder."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old)
    else:
        os.replace(work, out)


SHOW_MISSING = 10
"""Source files named one per line when they could not be had (the rest: ``missing.csv``)."""


def _write_missing(folder: Path, out: Path, missing: list[dict[str, str]]) -> None:
    """``missing.csv`` (one row per file of the set not built) and one printed line per source
    file that could not be had, naming it and why."""
    if not missing:
        return
    write_index(folder / "missing.csv", missing, ("path", "photo", "reason"))
    photos = {m["photo"]: m["reason"] for m in missing}
    for photo, reason in list(photos.items())[:SHOW_MISSING]:
        print(f"not built: {photo}: {reason}")
    more = len(photos) - SHOW_MISSING
    print(
        (f"... and {more} more source files; " if more > 0 else "")
        + f"{len(missing)} files of the set not built, listed in {out / 'missing.csv'}"
    )


def built(folder: str | os.PathLike, index: str | os.PathLike) -> dict | None:
    """The ``build.json`` of ``folder`` when it was built from ``index`` as it is now, else None."""
    path = Path(folder) / BUILD_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("index_sha256") == index_digest(index) else None


@dataclass
class _Build:
    """A build under way: the index's rows, where each source file is, the staging folder."""

    key: str
    out: Path
    index: Path
    rows: list[dict[str, str]]
    got: dl.SetFetch
    work: Path
    t0: float

    def reason(self, source_file: str) -> str:
        return next(m["reason"] for m in self.got.missing if m["path"] == source_file)


def _start(key: str, out, index, source, progress: bool, workers: int, file_key: str) -> _Build:
    """Read the index (default: the package's), get the source files (from ``source``, a
    folder, or downloaded into the user cache), then make the staging folder."""
    t0 = time.time()
    index = Path(index or dl.index_path(key))
    rows = read_index(index)
    dest = dl.user_cache() / "downloads" / key
    files = photo_files(rows, file_key)
    got = dl.download_set(key, files, dest, source, progress=progress, workers=workers)
    return _Build(key, Path(out), index, rows, got, _staging(Path(out)), t0)


def _finish(b: _Build, missing: list[dict[str, str]], **info) -> dict:
    """Record what was not built, write ``build.json`` and put the build in place."""
    _write_missing(b.work, b.out, missing)
    info = {
        "set": b.key,
        "index": str(b.index),
        "index_sha256": index_digest(b.index),
        "source": b.got.source or " ".join(dl.remote_urls(dl.DOWNLOADS[b.key])),
        **info,
        "missing": missing,
        "seconds": round(time.time() - b.t0, 1),
    }
    (b.work / BUILD_FILE).write_text(json.dumps(info, indent=1))
    _swap_in(b.work, b.out)
    return info


README = """# realdev, built from its source

Real masked, unmasked and worn-wrong faces for measuring (never for training), built by
`python -m maskdet realset` (maskdet.evaluation.evalsets) from `{index}`: {counts}.

- Source: the public GitHub repository {repo} at commit `{commit}` (photos collected for a
  students' face-mask project, boxed in Pascal VOC); this build fetched them from {where}.
- Licence: {licence}.
- Crop: a square of 1.5x the annotated box around its centre (no larger than the photo, moved
  inside it at an edge), resized to 128x128 (bicubic), RGB PNG. The index names the crops kept in
  the curated `../shared/realdev` (duplicates, copies of other sets and wrong labels removed).
- {identical} of {built} crops have the same pixels as that reference; crops that could not be
  built: {missing} (listed in `missing.csv`).
"""


def build_realdev(
    out: str | os.PathLike = REAL_OUT,
    source: str | os.PathLike | None = None,
    index: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 8,
) -> dict:
    """Build the real set in ``out`` (``mask/``, ``nomask/``, ``worn/``, ``labels.csv``,
    ``worn/labels.csv``, ``README.md``, ``build.json``) from the photos of the download table's
    ``realdev`` row: downloaded (into the user cache, resumable), or read from ``source`` (a
    checkout of the repository). A crop whose photo cannot be had or read is recorded in
    ``missing.csv`` and ``build.json``, never dropped in silence. ``index`` defaults to the
    package's. Returns the build's summary (also ``build.json``)."""
    b = _start("realdev", out, index, source, progress, workers, "photo")
    remote = dl.DOWNLOADS["realdev"]
    repo, commit = dl.JOLIGNIER, dl.JOLIGNIER_COMMIT
    labels, worn, missing = [], [], []
    identical = 0
    photo = None
    for r in b.rows:
        if r["photo"] not in b.got.found:
            missing.append({"path": r["path"], "photo": r["photo"], "reason": b.reason(r["photo"])})
            continue
        try:
            if photo is None or photo[0] != r["photo"]:
                photo = (r["photo"], open_photo(b.got.found[r["photo"]]))
            crop = crop_face(photo[1], tuple(float(r[k]) for k in BOX))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            missing.append({"path": r["path"], "photo": r["photo"], "reason": one_line(err)})
            continue
        dest = b.work / r["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop.save(dest, "PNG", optimize=True)
        identical += pixel_digest(np.asarray(crop)) == r.get("pixels")
        src = {"source_repo": repo, "source_path": f"{r['photo']}#{r['box']}"}
        if r["path"].startswith("worn/"):
            worn.append({"path": r["path"][len("worn/") :], "category": r["category"], **src})
        else:
            labels.append({"path": r["path"], "label": r["label"], **src})
    csv_cols = ("source_repo", "source_path")
    write_index(b.work / "labels.csv", labels, ("path", "label", *csv_cols), "\r\n")
    if worn:
        write_index(b.work / "worn/labels.csv", worn, ("path", "category", *csv_cols), "\r\n")
    n_mask = sum(r["label"] == "1" for r in labels)
    counts = {"mask": n_mask, "nomask": len(labels) - n_mask, "worn": len(worn)}
    (b.work / "README.md").write_text(
        README.format(
            index=b.index.name,
            counts=f"{n_mask} mask, {counts['nomask']} nomask, {len(worn)} worn",
            repo=repo,
            commit=commit,
            where=b.got.source or "raw.githubusercontent.com (or a mirror)",
            licence=remote.licence,
            identical=identical,
            built=len(labels) + len(worn),
            missing=len(missing),
        )
    )
    return _finish(
        b,
        missing,
        photos=len(photo_files(b.rows)),
        photos_missing=len(b.got.missing),
        crops=len(b.rows),
        built=len(labels) + len(worn),
        identical_to_reference=identical,
        counts=counts | {"missing": len(missing)},
        licence=remote.licence,
    )


def build_photos(
    out: str | os.PathLike = PHOTOS_OUT,
    source: str | os.PathLike | None = None,
    index: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 8,
) -> dict:
    """Put chapter 06's photos in ``out``, named by the index's ``file`` column, with a
    ``labels.csv`` (file, label, source, licence, url) and ``build.json``: downloaded through the
    download table's ``photos`` row, or read from ``source`` (a folder holding the same paths).
    A photo that cannot be had is recorded (``missing.csv``, ``build.json``)."""
    b = _start("photos", out, index, source, progress, workers, "path")
    base = dl.DOWNLOADS["photos"].urls[0]
    labels, missing = [], []
    for r in b.rows:
        if r["path"] not in b.got.found:
            missing.append({"path": r["file"], "photo": r["path"], "reason": b.reason(r["path"])})
            continue
        shutil.copyfile(b.got.found[r["path"]], b.work / r["file"])
        labels.append(
            {k: r[k] for k in ("file", "label", "source", "licence")} | {"url": base + r["path"]}
        )
    write_index(b.work / "labels.csv", labels, ("file", "label", "source", "licence", "url"))
    return _finish(
        b,
        missing,
        photos=len(b.rows),
        built=len(labels),
        bytes=sum(int(r["bytes"]) for r in b.rows if r["path"] in b.got.found),
    )


# ----------------------------------------------------------------------------- "auto"


def _has_real_set(folder: Path) -> bool:
    return (folder / "labels.csv").is_file() or (
        (folder / "mask").is_dir() and (folder / "nomask").is_dir()
    )


def _missing_note(info: dict) -> str:
    n = len(info["missing"])
    return f"; {n} not built (missing.csv)" if n else ""


def _resolve(
    kind: str,
    value: str | None,
    shared: Path,
    default_out: str,
    use_drive: bool,
    build,
    describe,
    progress: bool,
    without: str,
) -> str | None:
    """The shared copy, else a current build in ``default_out`` (complete, or none better to be
    had), else a new build; None with one line (why, then ``without``: what goes on without it)
    when nothing can be had."""
    if value not in ("auto", None, ""):
        return value
    if shared.is_dir() and (kind != "realdev" or _has_real_set(shared)):
        print(f"{kind}: {shared} (the shared copy beside the checkout)")
        return str(shared)
    out = storage_path(default_out, use_drive)
    index = dl.index_path(kind)
    info = built(out, index)
    if info is None or info["missing"]:
        try:
            info = build(out, progress=progress)
        except (dl.DownloadError, OSError) as err:
            if info is None:
                print(f"no {kind} set ({one_line(err)}): {without}")
                return None
            print(f"{kind}: keeping the earlier build in {out} ({one_line(err)})")
    print(f"{kind}: {out}: {describe(info)}{_missing_note(info)}")
    return out


def real_dir(
    value: str | None = "auto", use_drive: bool = True, progress: bool = True
) -> str | None:
    """The notebooks' ``REAL_DIR``: a folder given stays as it is; ``"auto"`` is
    ``../shared/realdev`` where it exists, else ``data/realdev`` built from the source (on
    Google Drive when it is mounted and ``use_drive``: built once, kept across sessions); None,
    with one line, when nothing can be reached (then no real-mask numbers)."""

    def describe(info: dict) -> str:
        c = info["counts"]
        return (
            f"{c['mask']} mask + {c['nomask']} nomask crops (+{c['worn']} worn wrong), cut from "
            f"the photos of {dl.JOLIGNIER} at {dl.JOLIGNIER_COMMIT[:7]} "
            f"({info['identical_to_reference']} of {info['built']} pixel-identical to the "
            "reference); no licence stated upstream: evaluation only, never redistributed"
        )

    without = "no real-mask numbers in this run (set REAL_DIR to a folder of real crops)"
    return _resolve(
        "realdev",
        value,
        REALDEV_DIR,
        REAL_OUT,
        use_drive,
        build_realdev,
        describe,
        progress,
        without,
    )


def photos_dir(
    value: str | None = "auto", use_drive: bool = True, progress: bool = True
) -> str | None:
    """Chapter 06's ``PHOTOS_DIR``: a folder given stays as it is; ``"auto"`` is
    ``../shared/qualitative`` where it exists, else ``data/photos`` downloaded from the source
    of the download table's ``photos`` row; None, with one line, when nothing can be reached."""

    def describe(info: dict) -> str:
        row = dl.DOWNLOADS["photos"]
        return f"{info['built']} {row.note}; licence: {row.licence}"

    without = "the photo cells are skipped (set PHOTOS_DIR, or UPLOAD = True on Colab)"
    return _resolve(
        "photos",
        value,
        PHOTOS_DIR,
        PHOTOS_OUT,
        use_drive,
        build_photos,
        describe,
        progress,
        without,
    )


def photo_credits(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Each photo of ``folder``'s ``labels.csv`` with its label and, where recorded, its source,
    licence and URL (empty when the folder has no ``labels.csv``)."""
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        return []
    keep = ("file", "label", "source", "licence", "url")
    return [{k: r[k] for k in keep if k in r} for r in read_index(path)]
