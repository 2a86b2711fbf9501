"""Masking images with a synthesis backend: the per-image seeded RNG, one image (read, find the
face, render, check the mask's quality, write) and the worker pool over many; also
:func:`mask_files` for any folder. Stage 02 (:mod:`maskdet.synthesis.synthesis`) runs its jobs here. An
image's bytes depend only on the image, the seed, the look and its RNG key, never on the worker
count.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..core.imageio import FACE_SUFFIX, BadImage, is_image_name, read_rgb, write_face
from ..core.progress import bar as progress_bar
from ..core.system import default_workers, die_with_parent
from .appearance import Look
from .landmarks import Face, FaceFinder, eye_line_y, landmark_model_path
from .renderers import make_renderer, resolve_backend

MIN_AREA_RATIO = 0.2
"""A mask whose opaque area (alpha > 0.5) is below this fraction of the face box is dropped
(on lfw-mini: 1st percentile 0.23 for masktheface incl. turned-head templates, broken masks < 0.1)."""
KEY_POINTS = [30, 31, 32, 33, 34, 35] + list(range(48, 68))
"""Nose tip, nostrils and lip landmarks: a usable mask covers (almost) all of them."""
MIN_KEY_COVER = 0.9
CORE_POINTS = [30, 33, 51, 57, 62, 66]
"""Nose tip, lip centres and mouth centre: all must be under the mask."""

_STATE: dict = {}


def rng_for(seed: int, key: str) -> np.random.Generator:
    """The per-image RNG: the same choices for an image whatever the order or worker count."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# -------------------------------------------------------------------------- one image


def check_quality(alpha: np.ndarray, face: Face) -> str:
    """'' for a usable mask, else why it is dropped: thin/broken, missing nose and mouth, or
    reaching above the line through the eye centres (tilted heads, gas-mask cartridges)."""
    l, t, r, b = face.box
    box_area = max((r - l) * (b - t), 1)
    ratio = float((alpha > 0.5).sum()) / box_area
    if ratio < MIN_AREA_RATIO:
        return f"thin mask: area {ratio:.2f} of face box < {MIN_AREA_RATIO}"
    h, w = alpha.shape
    pts = face.landmarks[KEY_POINTS]
    xs, ys = np.clip(pts[:, 0], 0, w - 1), np.clip(pts[:, 1], 0, h - 1)
    covered = alpha[ys, xs] > 0.5
    cover = float(covered.mean())
    if cover < MIN_KEY_COVER or not covered[[KEY_POINTS.index(i) for i in CORE_POINTS]].all():
        return f"mask misses nose/mouth: covers {cover:.0%} of key landmarks"
    ys, xs = np.nonzero(alpha > 0.5)
    above = int((ys < eye_line_y(face.landmarks, xs)).sum())
    if above:
        return f"mask above the eyes: {above} px above the eye line"
    return ""


def _init(backend: str, masktheface_dir: str | None, seed: int, look: str = "real") -> None:
    """Worker initializer: models and templates are loaded once per process."""
    if _STATE.get("key") != (backend, masktheface_dir, look):
        _STATE.update(
            key=(backend, masktheface_dir, look),
            finder=FaceFinder(landmark_model_path()),
            renderer=make_renderer(backend, masktheface_dir, look),
        )
        preload = getattr(_STATE["renderer"], "preload", None)
        if preload:
            preload()
    _STATE["seed"] = seed


def forget_models() -> None:
    """Drop the models and templates this process loaded (the next run loads them again)."""
    _STATE.clear()


def _init_worker(
    parent: int, backend: str, masktheface_dir: str | None, seed: int, look: str
) -> None:
    die_with_parent(parent)
    cv2.setNumThreads(1)
    _init(backend, masktheface_dir, seed, look)


def _mask_one(job: tuple[str, str, str]) -> dict[str, str]:
    """Read, find the face, render, check, write: one result dict, never an exception."""
    src, dest, key = job
    res = {
        "status": "failed",
        "reason": "",
        "mask_type": "",
        "mask_color": "",
        "mask_texture": "",
        "box_source": "",
        "backend": "",
    }
    try:
        rgb = read_rgb(src)
    except BadImage as err:
        res["reason"] = str(err)
        return res
    try:
        face = _STATE["finder"].find(rgb)
        res["box_source"] = face.box_source
        out = _STATE["renderer"].render(rgb, face, rng_for(_STATE["seed"], key))
    except Exception as err:  # upstream geometry can fail in many ways: record, never abort
        res["reason"] = f"render failed: {type(err).__name__}: {err}".splitlines()[0][:160]
        return res
    res.update(mask_type=out.mask_type, mask_color=out.mask_color, mask_texture=out.mask_texture)
    res["backend"] = out.backend or _STATE["renderer"].name
    reason = check_quality(out.alpha, face) if res["backend"] != "occluder" else ""
    if reason:
        res.update(status="dropped", reason=reason)
        Path(dest).unlink(missing_ok=True)
        return res
    write_face(dest, out.rgb)
    res["status"] = "ok"
    return res


def run_jobs(
    jobs: list[tuple[str, str, str]],
    backend: str,
    masktheface_dir: str | os.PathLike | None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
    look: Look | str = "real",
    done: Callable[[int, dict[str, str]], None] | None = None,
) -> list[dict[str, str]]:
    """Results of :func:`_mask_one` for ``jobs`` (src, dest, rng key), in order; ``done(i,
    result)`` is called as each one arrives (stage 02 records it, to resume after a stop).

    Where ``fork`` exists (Linux, Colab) the models are loaded once here and the workers are
    forked with them (loading dlib's landmark model takes about 1.5 s per process). OpenCV is
    set to one thread before the models and templates are loaded, and until the pool is done:
    a child must not inherit a live OpenCV thread pool (or one still shutting down), which
    hangs it on a mutex at its first resize. Elsewhere the workers are spawned and load the
    models themselves. Workers end with this process, also when it is killed.
    """

    mdir = str(masktheface_dir) if masktheface_dir else None
    workers = workers or default_workers(4)
    bar = dict(total=len(jobs), desc=f"masks ({backend})", disable=not progress)
    look = Look.parse(look).name

    def collect(results) -> list[dict[str, str]]:
        out = []
        for res in progress_bar(results, **bar):
            if done is not None:
                done(len(out), res)
            out.append(res)
        return out

    if workers <= 1 or len(jobs) < 2:
        _init(backend, mdir, seed, look)
        return collect(_mask_one(j) for j in jobs)
    chunk = max(1, min(16, len(jobs) // (workers * 4)))
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if "fork" in multiprocessing.get_all_start_methods():
            _init(backend, mdir, seed, look)
            ctx, init, args = multiprocessing.get_context("fork"), die_with_parent, (os.getpid(),)
        else:
            ctx, init = multiprocessing.get_context("spawn"), _init_worker
            args = (os.getpid(), backend, mdir, seed, look)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init, initargs=args) as pool:
            return collect(pool.map(_mask_one, jobs, chunksize=chunk))
    finally:
        cv2.setNumThreads(threads)


# ---------------------------------------------------------------------- any folder


def mask_files(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    backend: str | None = None,
    masktheface_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Mask every file under ``in_dir`` into ``out_dir`` (same relative path, ``.png``).

    One record per file (written to ``out_dir/records.csv`` too); files without an image name
    are ``skipped``, unreadable ones ``failed``, with the reason. Never aborts on one file.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    backend, mdir = resolve_backend(backend, masktheface_dir, verbose=progress)
    files = sorted(p for p in in_dir.rglob("*") if p.is_file())
    records: list[dict[str, str]] = []
    jobs, used = [], set()
    for p in files:
        rel = p.relative_to(in_dir).as_posix()
        rec = {
            "input": rel,
            "output": "",
            "status": "skipped",
            "reason": "not an image file name",
            "mask_type": "",
            "mask_color": "",
            "mask_texture": "",
            "box_source": "",
            "backend": "",
        }
        records.append(rec)
        if not is_image_name(p.name):
            continue
        out = Path(rel).with_suffix(FACE_SUFFIX).as_posix()
        if out in used:
            out = rel + FACE_SUFFIX
        used.add(out)
        rec["output"] = out
        jobs.append((rec, (str(p), str(out_dir / out), rel)))
    results = run_jobs([j for _, j in jobs], backend, mdir, workers, seed, progress)
    for (rec, _), res in zip(jobs, results):
        rec.update(res)
        if res["status"] != "ok":
            rec["output"] = ""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "records.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(
            fh, fieldnames=list(records[0]) if records else ["input"], lineterminator="\n"
        )
        w.writeheader()
        w.writerows(records)
    return records
