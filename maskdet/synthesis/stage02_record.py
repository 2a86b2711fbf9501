"""Stage 02's record of finished images (``DATA_DIR/stage02.jsonl``), so that a stopped run
resumes: the settings first, then one line per image as its result arrives; a rerun with the
same faces and settings keeps the images already written and readable. A shard of stage 02
(:mod:`maskdet.synthesis.shards`) keeps its own record, ended by a line saying it finished."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..core.constants import SPLITS
from ..core.imageio import BadImage, read_rgb
from ..core.manifest import STAGE02_RECORD


def fingerprint(data_dir: Path, faces: list[dict[str, str]]) -> str:
    """What stage 02 works on: each face's path, pair id and size."""
    h = hashlib.sha256()
    for r in faces:
        try:
            size = (data_dir / r["path"]).stat().st_size
        except OSError:
            size = -1
        h.update(f"{r['path']}:{r['pair_id']}:{size}\n".encode())
    return h.hexdigest()[:16]


def read_settings(path: Path) -> dict | None:
    """The settings on the first line of the stage 02 record at ``path``, or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            made_with = json.loads(fh.readline())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return made_with if isinstance(made_with, dict) else None


def read_record(
    path: Path, data_dir: Path, settings: dict | None = None, exists_only: bool = False
) -> tuple[dict | None, dict[str, dict[str, str]], dict | None]:
    """(settings, kept, finished) of the stage 02 record at ``path``: the settings it was made
    with (None when it cannot be read), the finished images whose image is still in
    ``data_dir`` (readable, or only there with ``exists_only``) and the summary of a finished
    shard (else None). ``kept`` is empty when ``settings`` is given and differs."""
    made_with = read_settings(path)
    if made_with is None or settings is not None and made_with != settings:
        return made_with, {}, None
    kept, finished = {}, None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, {}, None
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            if "finished" in entry:
                finished = entry["finished"]
                continue
            dest, res = entry["dest"], entry["result"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill: that image is made again
        if res.get("status") == "ok":
            if exists_only and not (data_dir / dest).is_file():
                continue
            if not exists_only:
                try:
                    read_rgb(data_dir / dest)
                except BadImage:
                    continue
        kept[dest] = res
    return made_with, kept, finished


class Stage02Record:
    """``DATA_DIR/stage02.jsonl`` (or a shard's record at ``path``): stage 02's settings, then
    one line per finished image (its output path and result), appended and flushed as each
    result arrives. Lines of a previous run with the same settings whose image is still there
    and readable are kept: their images are not made again. ``kept``: the lines to start from
    instead (the merge of the shards' records)."""

    def __init__(
        self,
        data_dir: Path,
        settings: dict,
        runner: Callable,
        resume: bool = True,
        path: Path | None = None,
        kept: dict[str, dict[str, str]] | None = None,
    ):
        self.data_dir, self.runner = data_dir, runner
        self.path = path or data_dir / STAGE02_RECORD
        if kept is None:
            kept = read_record(self.path, data_dir, settings)[1] if resume else {}
        self.kept, self.kept_count = kept, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"settings": settings}) + "\n")
            for dest, res in self.kept.items():
                fh.write(json.dumps({"dest": dest, "result": res}) + "\n")
        os.replace(tmp, self.path)
        self.fh = open(self.path, "a", encoding="utf-8")

    def remove_stale(self, stage01_files: set[str]) -> None:
        """Delete stage 02's images that are not kept (a previous run's, or half-written ones):
        everything in ``*/wearing_mask/`` and every file in ``*/not_wearing_mask/`` that is
        not a stage-01 face."""
        for split in SPLITS:
            for label in ("wearing_mask", "not_wearing_mask"):
                folder = self.data_dir / split / label
                for f in folder.glob("*") if folder.is_dir() else ():
                    rel = f.relative_to(self.data_dir).as_posix()
                    if f.is_file() and rel not in self.kept and rel not in stage01_files:
                        f.unlink()

    def run(
        self, jobs: list[tuple[str, str, str]], dests: list[str], backend: str, *args, **kw
    ) -> list[dict[str, str]]:
        """``runner`` (:func:`maskdet.synthesis.masking.run_jobs`) for the jobs whose image is not kept;
        every result, in order."""
        results: list[dict[str, str] | None] = [self.kept.get(d) for d in dests]
        self.kept_count += sum(r is not None for r in results)
        todo = [i for i, r in enumerate(results) if r is None]

        def done(k: int, res: dict[str, str]) -> None:
            results[todo[k]] = res
            self.fh.write(json.dumps({"dest": dests[todo[k]], "result": res}) + "\n")
            self.fh.flush()

        self.runner([jobs[i] for i in todo], backend, *args, done=done, **kw)
        return results  # type: ignore[return-value]

    def remove_unkept(self, dests: list[str]) -> None:
        """Delete the files at ``dests`` that are not kept, and their half-written copies (a
        shard clears only its own images: the other shards write the same folders)."""
        for dest in dests:
            if dest not in self.kept:
                (self.data_dir / dest).unlink(missing_ok=True)
            (self.data_dir / (dest + ".part")).unlink(missing_ok=True)

    def finish(self, summary: dict) -> None:
        """The last line of a shard's record: it finished, with this summary."""
        self.fh.write(json.dumps({"finished": summary}) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()
