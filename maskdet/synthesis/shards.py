"""Stage 02 split across machines: ``synthesize --shard K/N`` masks every N-th face (those at
positions K-1, K-1+N, ... of the manifest's faces, so a face, its masked twin and its occluded
copy stay in one shard) into the shared DATA_DIR, with its own resume record in
``DATA_DIR/stage02-shards/K-of-N/``; ``synthesize --merge-shards`` checks that every shard
finished with the merge's settings and faces, then writes the one manifest.

The shards' images are the images one job would write (each image's RNG is seeded by its pair
id, never by its position), so the merged DATA_DIR has the same bytes and manifest as one job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UsageError
from ..core.manifest import STAGE02_RECORD
from .stage02_record import read_record, read_settings

SHARDS_DIR = "stage02-shards"
"""``DATA_DIR/stage02-shards/K-of-N/``: one shard's resume record (and its lock)."""
STAGE02_SHARDS = (
    "stage 02 in shards (`python -m maskdet synthesize --data {} --shard K/N` for every K, "
    "then the same with --merge-shards instead of --shard)"
)
"""The incomplete marker of a DATA_DIR whose shards are not merged yet."""
SHARD_SETTING = "shard"
"""The key of a shard's record settings that says which shard it is (``"K/N"``)."""


class ShardError(RuntimeError):
    """The shards cannot be merged; the message names the shard and what to do."""


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with 1 <= K <= N."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m or not 1 <= int(m[1]) <= int(m[2]):
            raise UsageError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/8), got {text!r}")
        return cls(int(m[1]), int(m[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def folder(self, data_dir: Path) -> Path:
        return data_dir / SHARDS_DIR / f"{self.index}-of-{self.count}"

    def record(self, data_dir: Path) -> Path:
        return self.folder(data_dir) / STAGE02_RECORD

    def owns(self, position: int) -> bool:
        """Whether the face at ``position`` of stage 02's faces is this shard's."""
        return position % self.count == self.index - 1

    def command(self, data_dir: Path) -> str:
        return f"`python -m maskdet synthesize --data {data_dir} --shard {self}`"


@dataclass
class FinishedShard:
    """A shard's record, read for the merge: its images (dest -> result) and summary."""

    shard: Shard
    folder: Path
    kept: dict[str, dict[str, str]]
    summary: dict


def _differences(made_with: dict, settings: dict) -> str:
    if made_with.get("faces") != settings.get("faces"):
        return "from other faces (another stage 01 output, or the faces changed since)"
    diff = [
        f"{k} {made_with.get(k)!r} (this merge: {settings.get(k)!r})"
        for k in settings
        if k != "faces" and made_with.get(k) != settings.get(k)
    ]
    return "with other settings: " + ", ".join(diff)


def finished_shards(data_dir: Path, settings: dict) -> list[FinishedShard]:
    """Every shard of one run under ``DATA_DIR/stage02-shards``, each finished with
    ``settings`` (stage 02's, the shard aside); else :class:`ShardError` naming each missing,
    duplicated, foreign or unfinished shard in one line."""
    root = data_dir / SHARDS_DIR
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise ShardError(
            f"no shards in {root}: run {Shard(1, 2).command(data_dir).replace('1/2', 'K/N')} "
            "for every K on the machines first, then merge"
        )
    problems: list[str] = []
    declared: dict[Shard, list[tuple[Path, dict]]] = {}
    for folder in folders:
        made_with = read_settings(folder / STAGE02_RECORD)
        try:
            shard = Shard.parse((made_with or {})[SHARD_SETTING])
        except (KeyError, UsageError):
            problems.append(f"{folder} holds no shard's record: remove it")
            continue
        declared.setdefault(shard, []).append((folder, made_with))  # type: ignore[arg-type]
    counts = sorted({s.count for s in declared})
    if len(counts) > 1:
        runs = "; ".join(
            f"{n} shards: "
            + ", ".join(str(f) for s in sorted(declared) if s.count == n for f, _ in declared[s])
            for n in counts
        )
        raise ShardError(
            f"shards of {len(counts)} different runs in {root} ({runs}): remove the folders of "
            "the run you do not merge"
        )
    count = counts[0] if counts else 0
    finished, foreign = [], []
    for shard in (Shard(k, count) for k in range(1, count + 1)):
        found = declared.get(shard, [])
        if not found:
            problems.append(
                f"shard {shard} is missing (no {shard.folder(data_dir)}): run "
                f"{shard.command(data_dir)} with the same options"
            )
            continue
        if len(found) > 1:
            where = " and ".join(str(f) for f, _ in found)
            problems.append(f"shard {shard} is there twice ({where}): keep one")
            continue
        folder, made_with = found[0]
        own = {k: v for k, v in made_with.items() if k != SHARD_SETTING}
        if own != settings:
            foreign.append((shard, folder, _differences(own, settings)))
            continue
        _, kept, summary = read_record(folder / STAGE02_RECORD, data_dir, made_with, True)
        if summary is None:
            problems.append(
                f"shard {shard} ({folder}) has not finished ({len(kept)} images recorded): "
                f"run {shard.command(data_dir)} again (it resumes), then merge"
            )
            continue
        finished.append(FinishedShard(shard, folder, kept, summary))
    if len(foreign) == count and len({why for _, _, why in foreign}) == 1:
        problems.append(
            f"every shard was made {foreign[0][2]}: run the merge with the shards' options"
        )
    else:
        problems += [
            f"shard {shard} ({folder}) was made {why}: run that shard again with the merge's "
            "options, or the merge with the shards'"
            for shard, folder, why in foreign
        ]
    if problems:
        raise ShardError(f"cannot merge the shards in {root}: " + "; ".join(problems))
    return finished
