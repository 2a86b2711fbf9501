"""Stage 01's reading of a source tree: which files are faces, who each face is, and a unique
output name for every face.

The layout is read from the whole tree, never from its first entry: the images' common folder
is the root (so a stray file or a ``lfw-deepfunneled/`` wrapper changes nothing), the identity
is the first folder level under it that is not a split folder (``train``, ``val``, ``test``, ...),
and an image directly in the root is a person of its own named by its file name without the
trailing number (``Aaron_Eckhart_0001.jpg`` -> ``Aaron_Eckhart``, the LFW convention). Files
without an image name are ignored and counted by extension; images in formats that cannot be
read here (HEIC, AVIF, raw) keep their row, skipped with the reason.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..core.guard import printable
from ..core.imageio import is_image_name

SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "test", "testing"}
"""Folder names that hold a split rather than a person: looked through."""
EXPECTED_LAYOUT = (
    "one folder per person (ROOT/<Person>/<image>.jpg, as in LFW), or one image per person "
    "named <Person>_<NNNN>.jpg in one folder"
)


@dataclass(frozen=True)
class InputImage:
    """One input image: where it is, who it is, a unique name for the output file."""

    source: str  # archive member or relative path, as recorded (names not UTF-8 escaped)
    identity: str  # escaped as the source
    loc: str  # absolute path on disk (after extraction)


@dataclass
class SourceTree:
    """What a source folder holds: its images (with identities) and the files ignored."""

    root: Path  # the images' common folder
    items: list[InputImage]
    ignored: Counter = field(default_factory=Counter)  # non-image files by extension
    layout: str = ""

    @property
    def identities(self) -> set[str]:
        return {it.identity for it in self.items}


def person_of_file(name: str) -> str:
    """The identity of an image directly in the root: its stem without a trailing ``_NNNN``."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return re.sub(r"_\d+$", "", stem) or stem


def _common_folder(folders: list[tuple[str, ...]]) -> tuple[str, ...]:
    first = min(folders)
    last = max(folders)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def scan_tree(top: Path, identities: dict[str, str] | None = None) -> SourceTree:
    """Every image under ``top`` with its identity (``identities``: file name -> identity, as
    CelebA's list gives them), and the non-image files ignored."""
    images, ignored = [], Counter()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(top).parts
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_name(name, unsupported=True):
                images.append((rel_dir, name))
            else:
                ignored[Path(name).suffix.lower() or "(no extension)"] += 1
    if not images:
        return SourceTree(top, [], ignored, "no images")
    common = _common_folder([d for d, _ in images])
    root = top.joinpath(*common)
    items, kinds = [], Counter()
    for rel_dir, name in images:
        below = rel_dir[len(common) :]
        people = [d for d in below if d.lower() not in SPLIT_FOLDERS]
        if identities is not None:
            identity = identities.get(name, f"unknown_{name}")
        elif people:
            identity = people[0]
        else:
            identity = person_of_file(name)
        kinds["folder" if people else "file"] += 1
        rel = "/".join((*below, name))
        items.append(
            InputImage(
                printable(f"{root.name}/{rel}"),
                printable(identity),
                str(root.joinpath(*below, name)),
            )
        )
    layout = (
        "identities from a list"
        if identities is not None
        else "one folder per person"
        if not kinds["file"]
        else "one image per person"
        if not kinds["folder"]
        else "person folders and loose images"
    )
    return SourceTree(root, items, ignored, layout)


def unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... : the first one not in ``used`` (compared without
    case, for case-insensitive file systems); the name returned is added to ``used``."""
    name, n = stem, 1
    while name.lower() in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name.lower())
    return name
