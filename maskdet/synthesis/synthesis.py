"""Stage 02: a masked twin for every face, written next to it by the same writer.

The backends (:mod:`maskdet.synthesis.renderers`) share face finding (:mod:`maskdet.synthesis.landmarks`), the
per-image seeded RNG, the quality check and the worker pool (:mod:`maskdet.synthesis.masking`), and the
manifest handling: ``masktheface`` (upstream MaskTheFace through :mod:`masktheface_patch`, the
default when a checkout is found), ``builtin`` (:mod:`maskdet.synthesis.masks`, for machines without it)
and ``mixed`` (both, per image). The ``look`` (:mod:`maskdet.synthesis.appearance`) sets the realism
levers: real-photo colours, shading that follows the face's light, ear loops, size jitter.
Optionally a fraction of the faces also gets a hard negative (:mod:`maskdet.synthesis.occluders`). Output
bytes depend only on the input, the seed, the look and the image's pair id, never on the worker
count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..core.errors import UsageError
from ..core.guard import (
    DATA_DIR_MARK,
    claim_folder,
    clear_incomplete,
    incomplete,
    locked,
    mark_incomplete,
)
from ..core.imageio import FACE_SUFFIX
from ..core.manifest import (
    STAGE01_RECORD,
    STAGE02,
    STAGE02_RECORD,
    STAGE02_SUMMARY,
    new_row,
    read_manifest,
    write_manifest,
)
from .appearance import Look
from .masking import rng_for, run_jobs
from .renderers import MASK_BACKENDS, resolve_backend
from .shards import SHARD_SETTING, SHARDS_DIR, STAGE02_SHARDS, Shard, ShardError, finished_shards
from .stage02_record import Stage02Record, fingerprint

# -------------------------------------------------------------------------- data set


def synthesize_dataset(
    data_dir: str | os.PathLike,
    backend: str | None = None,
    masktheface_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
    look: Look | str = "real",
    hard_negatives: float = 0.0,
    resume: bool = True,
    shard: Shard | str | None = None,
    merge_shards: bool = False,
) -> dict:
    """Stage 02: a masked twin in ``<split>/wearing_mask/`` for every usable face; updates the manifest.

    A face whose twin failed or was dropped is marked ``excluded`` so every face used has its
    twin. With ``hard_negatives`` > 0, that fraction of the faces (drawn per pair from the seed)
    also gets an occluded copy (:mod:`maskdet.synthesis.occluders`: a beard, hand, scarf, collar or
    microphone over the lower face) in ``<split>/not_wearing_mask/<stem>.occ.png``, labelled
    ``not_wearing_mask`` with its kind in the manifest's ``occluder`` column. Returns a summary
    dict.

    Stopping is safe: the DATA_DIR is locked and marked incomplete while stage 02 rewrites it,
    and every finished image is recorded in ``DATA_DIR/stage02.jsonl``. A re-run with the same
    faces and settings keeps the images already written and valid (``resume=False`` redoes them
    all; the output bytes are the same either way); other settings replace the previous output.

    ``shard="K/N"`` (:mod:`maskdet.synthesis.shards`) makes only shard K's faces, with its own record, and
    leaves the manifest as it is; ``merge_shards`` then checks that all N shards finished with
    these settings and writes the manifest: the same bytes as one job.
    """
    data_dir = Path(data_dir)
    if not 0.0 <= hard_negatives <= 1.0:
        raise UsageError(f"hard_negatives is a fraction of the faces (0..1), got {hard_negatives}")
    if shard is not None and merge_shards:
        raise UsageError("--shard runs one shard, --merge-shards merges them: give one of the two")
    shard = Shard.parse(shard) if isinstance(shard, str) else shard
    if not data_dir.is_dir():
        read_manifest(data_dir)  # names the stage to run first
    args = (data_dir, workers, seed, progress, Look.parse(look).name, hard_negatives)
    if shard is not None:  # shards share the DATA_DIR, each holds its own folder alone
        with locked(data_dir, f"stage 02 shard {shard}", shared=True):
            with locked(shard.folder(data_dir), f"stage 02 shard {shard}"):
                return _Stage02(*args).shard(backend, masktheface_dir, resume, shard)
    with locked(data_dir, "stage 02"):
        if merge_shards:
            return _Stage02(*args).merge(backend, masktheface_dir)
        return _Stage02(*args).whole(backend, masktheface_dir, resume)


Produce = Callable[[list[tuple[str, str, str]], list[str], str], list[dict[str, str]]]
"""Results for (jobs, their dests, backend): made, or read from the shards' records."""


class _Stage02:
    """One run of stage 02 on ``data_dir``: the whole job, one shard, or the shards' merge."""

    def __init__(
        self,
        data_dir: Path,
        workers: int | None,
        seed: int,
        progress: bool,
        look: str,
        hard_negatives: float,
    ):
        self.data_dir, self.workers, self.seed, self.progress = data_dir, workers, seed, progress
        self.look, self.hard_negatives = look, hard_negatives
        rows = read_manifest(data_dir, rewriting="stage 02")
        if not any(
            r["label"] == "not_wearing_mask" and r["status"] in ("ok", "excluded") for r in rows
        ):
            raise RuntimeError(f"{data_dir} has no faces yet: run 01_download first")
        self.rows = [r for r in rows if r["label"] != "wearing_mask" and not r["occluder"]]
        for r in self.rows:
            if r["status"] == "excluded":
                r.update(status="ok", reason="")
        self.faces = [
            r for r in self.rows if r["label"] == "not_wearing_mask" and r["status"] == "ok"
        ]

    def settings(self, backend: str) -> dict:
        """What the output depends on: a record or shard made with other settings is redone."""
        return {
            "backend": backend,
            "look": self.look,
            "seed": self.seed,
            "hard_negatives": self.hard_negatives,
            "faces": fingerprint(self.data_dir, self.faces),
        }

    def producer(self, record: Stage02Record, mdir: Path | None) -> Produce:
        """Results made by the workers, through ``record`` (kept ones are not made again)."""

        def produce(jobs, dests, backend):
            if backend == "occluder":
                return record.run(
                    jobs, dests, backend, None, self.workers, self.seed, self.progress
                )
            return record.run(
                jobs, dests, backend, mdir, self.workers, self.seed, self.progress, self.look
            )

        return produce

    def whole(self, backend: str | None, masktheface_dir, resume: bool) -> dict:
        backend, mdir = resolve_backend(backend, masktheface_dir, verbose=self.progress)
        record = Stage02Record(self.data_dir, self.settings(backend), run_jobs, resume)
        mark_incomplete(self.data_dir, STAGE02.format(self.data_dir))
        record.remove_stale(set(r["path"] for r in self.rows if r["path"]))
        results, negatives, seconds = self.make(self.faces, backend, self.producer(record, mdir))
        record.close()
        made_by = synthesizer(backend, mdir)
        return self.finish(results, backend, seconds, negatives, record.kept_count, made_by)

    def shard(self, backend: str | None, masktheface_dir, resume: bool, shard: Shard) -> dict:
        backend, mdir = resolve_backend(backend, masktheface_dir, verbose=self.progress)
        settings = self.settings(backend) | {SHARD_SETTING: str(shard)}
        record = Stage02Record(
            self.data_dir, settings, run_jobs, resume, path=shard.record(self.data_dir)
        )
        self.mark_sharded()
        mine = [r for i, r in enumerate(self.faces) if shard.owns(i)]
        record.remove_unkept([d for r in mine for d in (_twin_dest(r), _occluded_dest(r))])
        results, negatives, seconds = self.make(mine, backend, self.producer(record, mdir))
        summary = summarize(results, backend, seconds) | {
            "shard": str(shard),
            "synthesizer": synthesizer(backend, mdir),
            "hard_negatives": negatives,
            "kept_from_before": record.kept_count,
        }
        record.finish(summary)
        record.close()
        return summary

    def merge(self, backend: str | None, masktheface_dir) -> dict:
        if backend not in MASK_BACKENDS:  # the merge renders nothing: no checkout needed
            backend = resolve_backend(backend, masktheface_dir, verbose=self.progress)[0]
        settings = self.settings(backend)
        shards = finished_shards(self.data_dir, settings)
        merged = {dest: res for s in shards for dest, res in s.kept.items()}
        owner = {}
        for i, r in enumerate(self.faces):
            owner[_twin_dest(r)] = owner[_occluded_dest(r)] = shards[i % len(shards)]

        def recorded(jobs, dests, backend):
            missing = [d for d in dests if d not in merged]
            if missing:
                s = owner[missing[0]]
                raise ShardError(
                    f"cannot merge the shards in {self.data_dir / SHARDS_DIR}: shard {s.shard} "
                    f"({s.folder}) finished, but {missing[0]} is not in "
                    f"{self.data_dir} (nor {len(missing) - 1} more): wait until the shared "
                    f"folder has synced, or run {s.shard.command(self.data_dir)} again"
                )
            return [merged[d] for d in dests]

        results, negatives, _ = self.make(self.faces, backend, recorded)
        self.mark_sharded()
        record = Stage02Record(self.data_dir, settings, run_jobs, kept=merged)
        record.remove_stale(set(r["path"] for r in self.rows if r["path"]))
        record.close()
        seconds = sum(s.summary.get("seconds", 0.0) for s in shards)
        kept = sum(s.summary.get("kept_from_before", 0) for s in shards)
        made_by = {s.summary.get("synthesizer") or synthesizer(backend, None) for s in shards}
        summary = self.finish(
            results, backend, seconds, negatives, kept, "; ".join(sorted(made_by))
        )
        shutil.rmtree(self.data_dir / SHARDS_DIR)
        return summary | {"shards": len(shards)}

    def mark_sharded(self) -> None:
        """Mark the DATA_DIR incomplete until the shards are merged."""
        marker = STAGE02_SHARDS.format(self.data_dir)
        if incomplete(self.data_dir) != marker:
            try:
                mark_incomplete(self.data_dir, marker)
            except FileNotFoundError:
                pass  # another shard wrote the same marker at the same moment

    def make(
        self, faces: list[dict[str, str]], backend: str, produce: Produce
    ) -> tuple[list[dict[str, str]], dict, float]:
        """The masked twins of ``faces`` and their hard negatives, their rows appended to the
        manifest's: (twin results, hard-negative counts, seconds the twins took)."""
        dests = [_twin_dest(r) for r in faces]
        jobs = [
            (str(self.data_dir / r["path"]), str(self.data_dir / d), r["pair_id"])
            for r, d in zip(faces, dests)
        ]
        t0 = time.perf_counter()
        results = produce(jobs, dests, backend)
        seconds = time.perf_counter() - t0
        for r, dest, res in zip(faces, dests, results):
            self.rows.append(
                _derived_row(
                    r, dest, res, "wearing_mask", **{**res, "backend": res["backend"] or backend}
                )
            )
            if res["status"] != "ok":
                r.update(status="excluded", reason=f"masked twin {res['status']}: {res['reason']}")
        negatives = _hard_negatives(
            self.data_dir, faces, self.rows, self.hard_negatives, produce, self.seed
        )
        return results, negatives, seconds

    def finish(
        self,
        results: list[dict[str, str]],
        backend: str,
        seconds: float,
        negatives: dict,
        kept: int,
        made_by: str,
    ) -> dict:
        """Write the manifest and ``DATA_DIR/stage02.json``, clear the incomplete marker; the
        summary (``made_by``: :func:`synthesizer`'s words)."""
        write_manifest(self.data_dir, self.rows)
        clear_incomplete(self.data_dir)
        summary = summarize(results, backend, seconds) | {
            "synthesizer": made_by,
            "seed": self.seed,
            "look": self.look,
            "hard_negatives": negatives,
            "kept_from_before": kept,
        }
        (self.data_dir / STAGE02_SUMMARY).write_text(json.dumps(summary, indent=1))
        return summary


def synthesizer(backend: str, checkout: str | os.PathLike | None) -> str:
    """Who draws the masks, in words: ``MaskTheFace at commit caf4d6c`` (the checkout's git
    commit), ``the builtin renderer``, or both for ``mixed``."""
    if backend == "builtin" or checkout is None:
        return "the builtin renderer"
    commit = ""
    if (Path(checkout) / ".git").exists():  # its own repository, not one it was copied into
        git = ["git", "-C", str(checkout), "rev-parse", "--short=7", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    mtf = f"MaskTheFace at commit {commit or 'unknown (not a git checkout)'}"
    return f"{mtf} and the builtin renderer, per image" if backend == "mixed" else mtf


def _twin_dest(face: dict[str, str]) -> str:
    return f"{face['split']}/wearing_mask/{Path(face['path']).stem}{FACE_SUFFIX}"


def _occluded_dest(face: dict[str, str]) -> str:
    return f"{face['split']}/not_wearing_mask/{Path(face['path']).stem}.occ{FACE_SUFFIX}"


def _derived_row(face: dict[str, str], dest: str, res: dict, label: str, **fields) -> dict:
    """The manifest row of an image made from ``face`` (its masked twin or an occluded copy): the
    face's split, identity and pair, ``dest`` when it was written, and the given ``fields``."""
    return new_row(
        path=dest if res["status"] == "ok" else "",
        split=face["split"],
        label=label,
        identity=face["identity"],
        source=face["path"],
        pair_id=face["pair_id"],
        **fields,
    )


def _hard_negatives(
    data_dir: Path,
    faces: list[dict[str, str]],
    rows: list[dict[str, str]],
    fraction: float,
    produce: Produce,
    seed: int,
) -> dict:
    """Occluded copies of ``fraction`` of the ``faces`` that kept their twin (chosen per pair
    from the seed); appends their manifest rows, failures included, and returns their counts."""
    picks = [
        r
        for r in faces
        if r["status"] == "ok"
        and rng_for(seed, "pick-occluded:" + r["pair_id"]).random() < fraction
    ]
    dests = [_occluded_dest(r) for r in picks]
    jobs = [
        (str(data_dir / r["path"]), str(data_dir / d), "occ:" + r["pair_id"])
        for r, d in zip(picks, dests)
    ]
    results = produce(jobs, dests, "occluder") if jobs else []
    for r, dest, res in zip(picks, dests, results):
        rows.append(
            _derived_row(
                r,
                dest,
                res,
                "not_wearing_mask",
                occluder=res["mask_texture"] or "?",
                box_source=res["box_source"],
                backend="occluder",
                status=res["status"],
                reason=res["reason"],
            )
        )
    made = Counter(res["mask_type"] for res in results if res["status"] == "ok")
    return {
        "fraction": fraction,
        "images_in": len(jobs),
        "written": sum(made.values()),
        "failed": len(jobs) - sum(made.values()),
        "kinds": dict(sorted(made.items())),
    }


def copy_faces(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A new DATA_DIR holding the same stage-01 faces, splits and manifest rows as ``data_dir``
    but no masks yet: synthesize it with the other backend for the cross-synthesizer ablation.
    Files are hard-linked where the file system allows (else copied). ``out_dir`` must be new,
    empty or a DATA_DIR of this project (:func:`maskdet.core.guard.claim_folder`)."""
    src, out = Path(data_dir), Path(out_dir)
    if src.resolve() == out.resolve():
        raise ValueError("copy_faces: out_dir must differ from data_dir")
    rows = [r for r in read_manifest(src) if r["label"] == "not_wearing_mask"]
    if not rows:
        raise RuntimeError(f"{src} has no faces yet: run 01_download first")
    claim_folder(out, (STAGE01_RECORD, STAGE02_RECORD, DATA_DIR_MARK), "synthesize --out")
    (out / STAGE02_RECORD).unlink(missing_ok=True)  # its masks are made anew
    (out / STAGE02_SUMMARY).unlink(missing_ok=True)
    for r in rows:
        if r["status"] == "excluded":  # excluded for its twin only: this copy gets a new twin
            r.update(status="ok", reason="")
        if r["status"] != "ok":
            continue
        dest = out / r["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(src / r["path"], dest)
        except OSError:
            shutil.copyfile(src / r["path"], dest)
    write_manifest(out, rows)
    return out


def summarize(results: list[dict[str, str]], backend: str = "", seconds: float = 0.0) -> dict:
    """images_in == masked + failed + dropped, reasons, counts per mask type / colour / texture."""
    ok = [r for r in results if r["status"] == "ok"]
    status = Counter(r["status"] for r in results)
    return {
        "backend": backend,
        "images_in": len(results),
        "masked": len(ok),
        "fallback_box": sum(r["box_source"] == "fallback" for r in ok),
        "failed": status["failed"],
        "dropped": status["dropped"],
        "skipped": status["skipped"],
        "reasons": dict(Counter(r["reason"].split(":")[0] for r in results if r["status"] != "ok")),
        "mask_type": dict(sorted(Counter(r["mask_type"] for r in ok).items())),
        "mask_color": dict(sorted(Counter(r["mask_color"] for r in ok).items())),
        "mask_texture": dict(sorted(Counter(r["mask_texture"] for r in ok).items())),
        "seconds": round(seconds, 2),
    }
