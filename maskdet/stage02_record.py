"""Stage 02's record of finished images (``DATA_DIR/stage02.jsonl``), so that a stopped run
resumes: the settings first, then one line per image as its result arrives; a rerun with the
same faces and settings keeps the images already written and readable."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from .constants import SPLITS
from .imageio import BadImage, read_rgb
from .manifest import STAGE02_RECORD


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


class Stage02Record:
    """``DATA_DIR/stage02.jsonl``: stage 02's settings, then one line per finished image (its
    output path and result), appended and flushed as each result arrives. Lines of a previous
    run with the same settings whose image is still there and readable are kept: their images
    are not made again."""

    def __init__(self, data_dir: Path, settings: dict, runner: Callable, resume: bool = True):
        self.data_dir, self.path, self.runner = data_dir, data_dir / STAGE02_RECORD, runner
        self.kept: dict[str, dict[str, str]] = self._read(settings) if resume else {}
        self.kept_count = 0
        tmp = self.path.with_name(self.path.name + ".part")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"settings": settings}) + "\n")
            for dest, res in self.kept.items():
                fh.write(json.dumps({"dest": dest, "result": res}) + "\n")
        os.replace(tmp, self.path)
        self.fh = open(self.path, "a", encoding="utf-8")

    def _read(self, settings: dict) -> dict[str, dict[str, str]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            if json.loads(lines[0]).get("settings") != settings:
                return {}
        except (OSError, ValueError, IndexError, AttributeError):
            return {}
        kept = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                dest, res = entry["dest"], entry["result"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: that image is made again
            if res.get("status") == "ok":
                try:
                    read_rgb(self.data_dir / dest)
                except BadImage:
                    continue
            kept[dest] = res
        return kept

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
        """``runner`` (:func:`maskdet.synthesis.run_jobs`) for the jobs whose image is not kept;
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

    def close(self) -> None:
        self.fh.close()
