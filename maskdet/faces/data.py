"""Stage 01: get the faces, crop them once at one framing, split by identity, write the manifest.

Sources (``--source``): ``lfw`` (official deep-funneled archive, see :mod:`maskdet.core.download`),
``celeba`` (aligned CelebA through Google Drive), ``gdrive:ID_OR_URL`` (an instructor's file or
folder), an ``http(s)://`` URL, or a local ``.tgz``/``.zip``/folder (offline use).

Framing: every face is stored once as a :data:`FACE_SIZE` square PNG cut from the centre of the
aligned image (:data:`CROP_FRACTION` of its shorter side). On LFW deep-funneled (250x250) that is
the central 160x160 pixels: the whole face from forehead to chin with a margin, so that both the
loader's centre crop (112 of 128) and its random crops keep the whole face.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd

from ..core import download as dl
from ..core.archive import extract
from ..core.constants import FACE_SIZE, SPLITS
from ..core.errors import UsageError
from ..core.guard import DATA_DIR_MARK, claim_folder, clear_incomplete, locked, mark_incomplete
from ..core.imageio import FACE_SUFFIX, BadImage, is_image_name, read_rgb, write_face
from ..core.manifest import (
    STAGE01,
    STAGE01_RECORD,
    STAGE02_RECORD,
    STAGE02_SUMMARY,
    manifest_path,
    new_row,
    read_manifest,
    write_manifest,
)
from ..core.progress import bar as progress_bar
from ..core.system import default_workers, die_with_parent
from .layout import EXPECTED_LAYOUT, SourceTree, scan_tree, unique_stem

CROP_FRACTION = 0.64
"""Side of the central square crop as a fraction of the shorter image side (LFW: 160 of 250)."""
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
STAGING = ".stage01.partial"
"""Where stage 01 writes before its output is swapped into DATA_DIR."""
CROP_CENTER_Y = {"celeba": 0.55}
"""Vertical centre of the crop per source (fraction of height); 0.5 elsewhere. CelebA's
aligned faces sit lower in their 178x218 frame than LFW's."""


# ----------------------------------------------------------------------------- sources


def resolve_source(
    source: str, cache_dir: str | os.PathLike, progress: bool = True
) -> tuple[Path, str]:
    """Turn a ``--source`` value into a local archive or folder; returns (path, kind)."""
    cache_dir = Path(cache_dir)
    if source == "lfw":
        return dl.download_remote("lfw", cache_dir, progress), "lfw"
    if source == "celeba":
        dl.download_remote("celeba_identities", cache_dir, progress)
        return dl.download_remote("celeba_images", cache_dir, progress), "celeba"
    if source.startswith("gdrive:"):
        return dl.download_gdrive(source[len("gdrive:") :], cache_dir, progress), "gdrive"
    if source.startswith(("http://", "https://")):
        url, _, frag = source.partition("#")
        md5 = frag[4:] if frag.startswith("md5=") else None
        name = PurePosixPath(url.split("?")[0]).name or "download"
        return dl.download_url([url], cache_dir / name, md5, progress=progress), "url"
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"source {source!r} is neither a known source (lfw, celeba, gdrive:ID) nor an existing "
            "file or folder"
        )
    return path.resolve(), "local"


def _celeba_identities(folder: Path) -> dict[str, str]:
    for cand in [
        folder / "identity_CelebA.txt",
        folder.parent / "identity_CelebA.txt",
        folder.parent.parent / "identity_CelebA.txt",
    ]:
        if cand.exists():
            pairs = (line.split() for line in cand.read_text().splitlines() if line.strip())
            return {name: f"celeba_{ident}" for name, ident in pairs}
    raise FileNotFoundError("identity_CelebA.txt not found next to the CelebA images")


def list_items(root: Path, kind: str = "local") -> SourceTree:
    """Every image under ``root`` with its identity, read from the whole tree (see
    :mod:`maskdet.faces.layout`); CelebA's identities come from ``identity_CelebA.txt``."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    top = entries[0] if kind == "celeba" and len(entries) == 1 and entries[0].is_dir() else root
    return scan_tree(top, _celeba_identities(top) if kind == "celeba" else None)


def check_split(tree: SourceTree, split_of: dict[str, str]) -> None:
    """Refuse a split with no identities, naming what was found and the layout expected."""
    empty = [s for s in SPLITS if s not in split_of.values()]
    if empty:
        raise ValueError(
            f"{tree.root}: {len(split_of)} identit{'y' if len(split_of) == 1 else 'ies'} "
            f"({tree.layout}), so {' and '.join(empty)} would have no people: train, val and "
            f"test need at least 3 people in all. Expected {EXPECTED_LAYOUT}"
        )


# ------------------------------------------------------------------------------- split


def split_identities(
    identities: list[str] | set[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    limit: int | None = None,
) -> dict[str, str]:
    """Assign each identity to train/val/test: seeded, stable, and identity-disjoint.

    Identities are ordered by a seeded hash (independent of input order and of Python's hash
    seed); ``limit`` keeps the first ``limit`` of that order; the first 80% go to train,
    the next 10% to val, the rest to test (each split gets at least one identity when
    there are three or more).
    """

    def key(ident: str) -> str:
        return hashlib.sha256(f"{seed}:{ident}".encode()).hexdigest()

    if limit is not None and limit < 0:
        raise UsageError(f"limit_identities must be 0 or more (0: all), got {limit}")
    order = sorted(set(identities), key=key)
    if limit:
        order = order[:limit]
    n = len(order)
    n_val = round(n * fractions[1])
    n_test = n - round(n * fractions[0]) - n_val
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = n - n_val - n_test
    out = {}
    for i, ident in enumerate(order):
        out[ident] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


# -------------------------------------------------------------------------------- crop


def crop_aligned(
    rgb: np.ndarray, size: int = FACE_SIZE, fraction: float = CROP_FRACTION, center_y: float = 0.5
) -> np.ndarray:
    """Central square crop (``fraction`` of the shorter side) resized to ``size`` x ``size``."""
    h, w = rgb.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    cy = int(round(h * center_y))
    y0 = min(max(0, cy - side // 2), h - side)
    x0 = (w - side) // 2
    crop = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp))


def _safe_stem(name: str) -> str:
    stem = name.rsplit("/", 1)[-1]
    if is_image_name(stem, unsupported=True):
        stem = stem.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "image"


def _process(job: tuple[str, str, float]) -> str:
    """Worker: read, crop and write one face; returns '' or the reason it was skipped."""
    src, dest, center_y = job
    try:
        rgb = read_rgb(src)
    except BadImage as err:
        return str(err)
    write_face(dest, crop_aligned(rgb, center_y=center_y))
    return ""


def prepare(
    root: str | os.PathLike,
    out: str | os.PathLike,
    kind: str = "local",
    seed: int = 0,
    limit_identities: int | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Crop every image under ``root`` into ``out/{split}/not_wearing_mask`` and write the manifest.

    Stage 01 owns the split folders. The new faces and manifest are written into
    ``out/.stage01.partial`` and swapped in at the end (the DATA_DIR marked incomplete only for
    the swap), so a run stopped at any point leaves the previous DATA_DIR as it was or one that
    every later stage refuses, never a half-written one that looks valid. A re-run (same inputs
    and seed) gives the same files. Returns a summary dict (images in, written, skipped with
    reasons).
    """
    root, out = Path(root), Path(out)
    with locked(out, "stage 01"):
        return _prepare(root, out, kind, seed, limit_identities, fractions, workers, progress)


def _prepare(
    root: Path,
    out: Path,
    kind: str,
    seed: int,
    limit_identities: int | None,
    fractions: tuple[float, float, float],
    workers: int | None,
    progress: bool,
) -> dict:
    tree = list_items(root, kind)
    items = tree.items
    if not items:
        raise ValueError(f"no images found under {root}: expected {EXPECTED_LAYOUT}")
    split_of = split_identities(tree.identities, seed, fractions, limit_identities)
    check_split(tree, split_of)
    chosen = [it for it in items if it.identity in split_of]
    work = out / STAGING
    shutil.rmtree(work, ignore_errors=True)
    center_y = CROP_CENTER_Y.get(kind, 0.5)
    jobs, rows = [], []
    used: dict[str, set[str]] = {split: set() for split in SPLITS}
    for it in chosen:
        split = split_of[it.identity]
        stem = unique_stem(_safe_stem(it.source), used[split])
        rel = f"{split}/not_wearing_mask/{stem}{FACE_SUFFIX}"
        jobs.append((it.loc, str(work / rel), center_y))
        rows.append(
            new_row(
                path=rel,
                split=split,
                label="not_wearing_mask",
                identity=it.identity,
                source=it.source,
                pair_id=f"{split}/{stem}",
                status="ok",
            )
        )
    workers = workers or default_workers(4)
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(
            workers, initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            reasons = list(
                progress_bar(
                    pool.map(_process, jobs, chunksize=32),
                    total=len(jobs),
                    desc="crop faces",
                    disable=not progress,
                )
            )
    else:
        reasons = [_process(j) for j in progress_bar(jobs, desc="crop faces", disable=not progress)]
    for row, reason in zip(rows, reasons):
        if reason:
            row.update(path="", status="skipped", reason=reason)
    write_manifest(work, rows)
    _swap_in(work, out)
    skipped = Counter(r["reason"] for r in rows if r["status"] == "skipped")
    result = {
        "images_found": len(items),
        "identities_found": len({it.identity for it in items}),
        "identities_used": len(split_of),
        "images_in": len(rows),
        "written": len(rows) - sum(skipped.values()),
        "skipped": sum(skipped.values()),
        "skipped_reasons": dict(skipped),
        "layout": tree.layout,
        "not_images_ignored": sum(tree.ignored.values()),
        "not_images": dict(sorted(tree.ignored.items())),
        "per_split": dict(Counter(r["split"] for r in rows if r["status"] == "ok")),
        "identities_per_split": dict(Counter(split_of.values())),
    }
    return result


def _swap_in(work: Path, out: Path) -> None:
    """Replace ``out``'s split folders and manifest by those in ``work`` (marked incomplete
    meanwhile); the records of the previous stage 01 and 02 runs go with them."""
    mark_incomplete(out, STAGE01.format(out))
    for name in (STAGE01_RECORD, STAGE02_RECORD, STAGE02_SUMMARY):
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
        if (work / split).exists():
            os.replace(work / split, out / split)
    os.replace(manifest_path(work), manifest_path(out))
    shutil.rmtree(work)
    clear_incomplete(out)


def finished_stage01(out: Path, settings: dict) -> dict | None:
    """The summary of the stage 01 run that made ``out`` with these ``settings``, when it
    finished and its faces are all there; else None."""
    try:
        record = json.loads((out / STAGE01_RECORD).read_text())
        rows = read_manifest(out, rewriting="stage 02")  # a stopped stage 02 resumes on them
    except (OSError, ValueError, RuntimeError):
        return None
    if record.get("settings") != settings:
        return None
    faces = [r for r in rows if r["label"] == "not_wearing_mask" and not r["occluder"]]
    if any(r["path"] and not (out / r["path"]).is_file() for r in faces):
        return None
    return record["result"]


def _settings(source: str, seed: int, limit_identities: int | None) -> dict:
    """What makes a stage 01 run: the source (a local one with its size and time), the seed,
    the identity limit and the split fractions."""
    path = Path(source).expanduser()
    stat = f":{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.exists() else ""
    where = f"{path.resolve()}{stat}" if path.exists() else source
    return {
        "source": where,
        "seed": seed,
        "limit_identities": limit_identities or 0,
        "fractions": list(DEFAULT_FRACTIONS),
    }


def check_no_overlap(source: Path, out: Path) -> None:
    """Refuse a source folder that is, holds or sits inside the output folder (stage 01
    replaces the output's split folders, which would delete the source's own images), and a
    source file inside one of those split folders."""
    src, dst = source.resolve(), out.resolve()
    splits = [dst / split for split in SPLITS]
    if source.is_dir():
        clash = src == dst or dst in src.parents or src in dst.parents
    else:
        clash = any(folder in src.parents for folder in splits)
    if clash:
        raise UsageError(
            f"--source {source} and --out {out} overlap: stage 01 replaces the split folders of "
            f"{out} ({', '.join(SPLITS)}), which would delete the source's own images; write to "
            "a folder outside the source"
        )


def download_and_prepare(
    source: str,
    out: str | os.PathLike,
    seed: int = 0,
    limit_identities: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Stage 01 end to end: fetch (or take) the source, extract it, crop, split, write.

    A DATA_DIR that a finished stage 01 made from the same source and settings is kept as it is
    (``force`` redoes it): re-running the notebook after a stopped runtime costs nothing. A
    folder that holds files but no record of stage 01 (another dataset, a project folder) is
    refused before anything is written (:func:`maskdet.core.guard.claim_folder`)."""
    out = Path(out)
    if limit_identities is not None and limit_identities < 0:
        raise UsageError(f"limit_identities must be 0 or more (0: all), got {limit_identities}")
    settings = _settings(source, seed, limit_identities)
    if Path(source).expanduser().exists():  # before anything is written
        check_no_overlap(Path(source).expanduser(), out)
    claim_folder(out, (STAGE01_RECORD, STAGING, DATA_DIR_MARK), "stage 01")
    with locked(out, "stage 01"):
        kept = None if force else finished_stage01(out, settings)
        if kept is not None:
            print(
                f"{out}: stage 01 already made these {kept['written']} faces from {source} with "
                "the same settings: kept (force=True, or download --force, redoes it)"
            )
            return kept | {"kept": True}
        cache_dir = Path(cache_dir) if cache_dir else out / "raw"
        path, kind = resolve_source(source, cache_dir, progress)
        if path.is_file():
            path = extract(path, cache_dir / (path.name.split(".")[0] + "_extracted"))
        result = prepare(
            path, out, kind, seed, limit_identities, workers=workers, progress=progress
        )
        result["source"] = source
        record = {"settings": settings, "result": result}
        (out / STAGE01_RECORD).write_text(json.dumps(record, indent=1, default=str))
        return result


# ------------------------------------------------------------------------- for the report


def split_table(rows: list[dict[str, str]]):
    """Identities and images per split and label (a pandas DataFrame for the notebooks)."""
    df = pd.DataFrame(rows)
    ok = df[df.status == "ok"]
    table = ok.groupby(["split", "label"]).agg(
        images=("path", "size"), identities=("identity", "nunique")
    )
    return table.unstack("label", fill_value=0)


def check_identity_disjoint(rows: list[dict[str, str]]) -> None:
    """Raise if an identity, or a face and its masked twin, sit in more than one split."""
    split_of: dict[str, str] = {}
    for r in rows:
        for key in (f"id:{r['identity']}", f"pair:{r['pair_id']}"):
            if split_of.setdefault(key, r["split"]) != r["split"]:
                raise AssertionError(f"{key} appears in {split_of[key]} and {r['split']}")
