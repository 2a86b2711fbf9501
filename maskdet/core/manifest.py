"""``DATA_DIR/manifest.csv``: one row for every input image and every image written.

Nothing is dropped silently: an input that cannot be used keeps its row, with ``status`` saying
what happened and ``reason`` why. Loaders use only rows whose status is ``ok``.

Statuses
    ok        usable image (either class)
    skipped   an input that stage 01 could not read or use (no file is written)
    failed    stage 02 could not make a masked twin (no mask file is written)
    dropped   stage 02 made a mask that failed the quality check (file removed)
    excluded  an unmasked face whose masked twin failed or was dropped; kept out of
              training so that every face used has its twin in the same split
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .constants import LABELS, SPLITS
from .guard import check_regular, incomplete

COLUMNS = [
    "path",  # relative to DATA_DIR (empty when nothing was written)
    "split",  # train / val / test
    "label",  # wearing_mask / not_wearing_mask
    "identity",  # person; identities never cross splits
    "source",  # where the pixels came from (archive member, file, or the unmasked twin's path)
    "pair_id",  # shared by a face and its masked twin
    "mask_type",
    "mask_color",
    "mask_texture",
    "box_source",  # hog / fallback: how the face box for synthesis was found
    "backend",  # synthesis backend (masktheface / builtin / occluder)
    "occluder",  # hard negatives: what covers the unmasked face (hand/mouth, scarf, ...)
    "status",
    "reason",
]
REQUIRED = ("path", "split", "label", "identity", "pair_id", "status")
"""Columns every manifest has had since the first version (the others default to empty)."""
STATUSES = ("ok", "skipped", "failed", "dropped", "excluded")
MANIFEST_NAME = "manifest.csv"
STAGE01_RECORD = "stage01.json"
"""``DATA_DIR/stage01.json``: the settings and summary of the stage 01 run that made the faces."""
STAGE02_RECORD = "stage02.jsonl"
"""``DATA_DIR/stage02.jsonl``: stage 02's settings and one line per image it finished."""
STAGE02_SUMMARY = "stage02.json"
"""``DATA_DIR/stage02.json``: the summary of the stage 02 run that drew the masks (its
``synthesizer``: who drew them, in words)."""
STAGE01 = "stage 01 (notebook 01_download, or `python -m maskdet download --out {}`)"
STAGE02 = "stage 02 (notebook 02_mask_synthesis, or `python -m maskdet synthesize --data {}`)"
"""How each stage that rewrites a DATA_DIR is named in its incomplete marker."""


def manifest_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / MANIFEST_NAME


def new_row(**values: str) -> dict[str, str]:
    """A manifest row with every column present (unknown keys are an error)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown manifest columns: {sorted(unknown)}")
    row = {c: "" for c in COLUMNS}
    row.update({k: "" if v is None else str(v) for k, v in values.items()})
    return row


MAX_MANIFEST_BYTES = 1 << 30
"""Largest manifest read (CelebA's 200,000 faces and their twins: about 60 MB)."""


class ManifestError(ValueError):
    """A manifest row or column that cannot be used: the message names the file, the row (its
    line in the file), the column, what is wrong, and the fix."""


def check_row(row: dict[str, str]) -> tuple[str, str] | None:
    """The first problem of one manifest row as (column, what is wrong), or None. The split,
    label and status must be known ones, the identity given, an ok row must have a path and a
    pair, and a path must be relative, inside ``split/label/`` of its own split and label, with
    no ``..`` (a path is joined to DATA_DIR to read, write and delete files)."""
    for column, known in (("split", SPLITS), ("label", tuple(LABELS)), ("status", STATUSES)):
        if row[column] not in known:
            return column, f"{row[column]!r} is not one of {', '.join(known)}"
    if not row["identity"].strip():
        return "identity", "empty (every face belongs to a person)"
    path = row["path"]
    if not path:
        if row["status"] == "ok":
            return "path", "empty, but the status is ok"
        return None
    if row["status"] == "ok" and not row["pair_id"].strip():
        return "pair_id", "empty (a face and its twin share one)"
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or (len(parts[0]) > 1 and parts[0][1] == ":"):
        return "path", f"{path!r} is not relative to DATA_DIR"
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        return "path", f"{path!r} has an empty, '.' or '..' part"
    if len(parts) < 3 or parts[:2] != [row["split"], row["label"]]:
        return "path", f"{path!r} is not under {row['split']}/{row['label']}/ (its split and label)"
    return None


def _rows(path: Path) -> tuple[list[dict[str, str]], list[int], list[str]]:
    """The rows of a manifest file, the line each starts on, and the header."""
    check_regular(path, MAX_MANIFEST_BYTES, "manifest")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{path} row {line}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines, line = [], [], 1
    try:
        for row in reader:
            rows.append(row)
            lines.append(line + 1)
            line = reader.line_num
    except csv.Error as err:
        raise ManifestError(f"{path} row {reader.line_num}: {err}") from None
    return rows, lines, list(reader.fieldnames or [])


def read_manifest(
    data_dir: str | os.PathLike, rewriting: str | None = None
) -> list[dict[str, str]]:
    """Read the manifest and check every row (:func:`check_row`); a clear error names the stage
    to run when it is missing, or when a stage was stopped while rewriting DATA_DIR
    (``rewriting``: the stage that may read it then, to finish its own work), and the row and
    column of a value that cannot be used (:class:`ManifestError`)."""
    stage = incomplete(data_dir)
    if stage is not None and not (rewriting and stage.startswith(rewriting)):
        raise RuntimeError(
            f"{data_dir} is incomplete: {stage} was stopped before it finished; run it again"
        )
    path = manifest_path(data_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run stage 01 first (notebook 01_download or "
            f"`python -m maskdet download --out {data_dir}`)"
        )
    again = (
        f"run stage 01 again (notebook 01_download or `python -m maskdet download --out "
        f"{data_dir} --force`)"
    )
    rows, lines, header = _rows(path)
    missing = [c for c in REQUIRED if c not in header]
    cut = next((i for i, r in enumerate(rows) if None in r.values() or None in r), None)
    if missing or cut is not None:
        what = f"no {', '.join(missing)} column" if missing else f"row {lines[cut]} is cut short"
        raise ManifestError(f"{path} is damaged ({what}): {again}")
    for row, line in zip(rows, lines):
        for c in COLUMNS:
            row.setdefault(c, "")
        problem = check_row(row)
        if problem is not None:
            column, what = problem
            raise ManifestError(f"{path} row {line}, column {column}: {what}: fix it, or {again}")
    return rows


def write_manifest(data_dir: str | os.PathLike, rows: Iterable[dict[str, str]]) -> Path:
    """Write rows atomically, sorted for stable bytes across re-runs and worker counts."""
    path = manifest_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: (r["pair_id"], r["label"], r["path"], r["source"]))
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in ordered:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    os.replace(tmp, path)
    return path


def usable(rows: Iterable[dict[str, str]], split: str | None = None) -> list[dict[str, str]]:
    """Rows a loader may use: status ok (and the given split)."""
    return [r for r in rows if r["status"] == "ok" and (split is None or r["split"] == split)]


def summary(rows: Iterable[dict[str, str]]) -> dict[str, Counter]:
    """Counts by (split, label, status) and by reason, for the notebooks' summary tables."""
    rows = list(rows)
    return {
        "by_split_label_status": Counter((r["split"], r["label"], r["status"]) for r in rows),
        "by_reason": Counter(r["reason"] for r in rows if r["status"] != "ok"),
    }


@dataclass(frozen=True)
class Item:
    """One usable image for a loader: its path and its label (1 = wearing_mask)."""

    path: str  # relative to DATA_DIR
    label: int


def select_rows(
    rows: list[dict[str, str]], split: str, limit: int | None = None, seed: int = 0
) -> list[Item]:
    """Usable rows of one split as items, sorted by path; ``limit`` keeps whole twin pairs.

    With a limit, pairs (a face and its masked twin) are ordered by a seeded hash and the first
    ones kept, so a small subset stays balanced between the classes and is the same every run.
    """
    rows = usable(rows, split)
    if limit is not None and limit < len(rows):
        by_pair: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by_pair.setdefault(r["pair_id"] or r["path"], []).append(r)
        order = sorted(by_pair, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        kept: list[dict[str, str]] = []
        for p in order:
            if len(kept) >= limit:
                break
            kept += by_pair[p]
        rows = kept[:limit]
    items = [Item(r["path"], LABELS[r["label"]]) for r in rows]
    return sorted(items, key=lambda it: it.path)
