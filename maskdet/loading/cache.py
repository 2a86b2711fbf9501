"""The cached loader's store: every usable image of a split decoded once into ``uint8``.

:func:`build_cache` writes ``<cache>/<split>-<key>.u8`` (memory-mapped, ``(N, 128, 128, 3)``) and
its metadata; the key hashes the items with their sizes and modification times, so changed data
give a new cache and unchanged data reuse it at once. An image that cannot be read keeps its
slot, marked invalid, with the reason. The cache lives in ``DATA_DIR/cache`` unless a location
is given (``cache_dir``, or the ``MASKDET_CACHE`` environment variable); a DATA_DIR that cannot
be written (a read-only mount, a shared folder) falls back to ``~/.cache/maskdet`` with a notice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..core.constants import CACHE_DIRNAME, FACE_SIZE
from ..core.imageio import BadImage, read_rgb
from ..core.manifest import Item, read_manifest, select_rows
from ..core.progress import bar as progress_bar
from ..core.system import default_workers


def read_face(path: Path, side: int = FACE_SIZE) -> tuple[np.ndarray | None, str]:
    """A face as a ``side`` x ``side`` uint8 RGB array (its centre square, resized when it has
    another size), or ``None`` and the reason it cannot be read."""
    try:
        rgb = read_rgb(path)
    except BadImage as err:
        return None, str(err)
    if rgb.shape[:2] != (side, side):
        h, w = rgb.shape[:2]
        s = min(h, w)
        rgb = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        interp = cv2.INTER_AREA if s > side else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (side, side), interpolation=interp)
    return rgb, ""


class _DecodeSet(Dataset):
    def __init__(self, data_dir: Path, items: list[Item], side: int):
        self.data_dir, self.items, self.side = data_dir, items, side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        arr, reason = read_face(self.data_dir / self.items[i].path, self.side)
        return i, arr, reason


@dataclass
class ImageCache:
    """Decoded uint8 images ``(N, side, side, 3)`` of one split, memory-mapped from disk.

    ``valid[i]`` is False for an image that could not be read; ``skipped`` maps its path to the
    reason. ``items`` keeps the manifest order (sorted by path).
    """

    items: list[Item]
    images: np.ndarray
    valid: np.ndarray
    skipped: dict[str, str]
    path: Path | None = None

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.float32)


CACHE_ENV = "MASKDET_CACHE"
"""Environment variable: where decoded caches go (instead of ``DATA_DIR/cache``)."""
_NOTICED: set[str] = set()


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made when missing), tried for real: a
    read-only mount can pass ``os.access``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_location(data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the decoded cache of ``data_dir`` goes: ``cache_dir``, else ``$MASKDET_CACHE``,
    else ``DATA_DIR/cache``; when that cannot be written, ``~/.cache/maskdet`` (with a one-line
    notice). Outside DATA_DIR each DATA_DIR gets its own sub-folder."""
    data_dir = Path(data_dir)
    root = cache_dir or os.environ.get(CACHE_ENV) or None
    if root is None:
        inside = data_dir / CACHE_DIRNAME
        if _writable(inside):
            return inside
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "maskdet"
        if str(data_dir) not in _NOTICED:
            _NOTICED.add(str(data_dir))
            print(
                f"notice: {data_dir} is read-only, so the decoded images are cached in {root} "
                f"(choose the place with --cache-dir or {CACHE_ENV})"
            )
    resolved = str(data_dir.resolve())
    name = f"{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:10]}"
    where = Path(root).expanduser() / name
    if not _writable(where):
        raise OSError(
            f"the cache folder {where} cannot be written: choose another with --cache-dir or "
            f"{CACHE_ENV}"
        )
    return where


def _cache_key(data_dir: Path, items: list[Item], side: int) -> str:
    h = hashlib.sha256(f"v1:{side}".encode())
    for it in items:
        try:
            st = (data_dir / it.path).stat()
            h.update(f"{it.path}:{it.label}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{it.path}:{it.label}:missing\n".encode())
    return h.hexdigest()[:16]


def build_cache(
    data_dir: str | os.PathLike,
    split: str,
    limit: int | None = None,
    seed: int = 0,
    side: int = FACE_SIZE,
    workers: int | None = None,
    in_memory: bool = False,
    progress: bool = False,
    items: list[Item] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ImageCache:
    """Decode every usable image of a split once into ``<cache>/<split>-<key>.u8`` (the cache
    folder from :func:`cache_location`).

    The key hashes the item list with sizes and modification times: changed data gives a new
    cache, an unchanged one is reused at once. ``in_memory`` keeps the array in RAM instead.
    ``items``: the split's items when the caller has already selected them (else they are
    selected from the manifest with ``limit`` and ``seed``).
    """
    data_dir = Path(data_dir)
    if items is None:
        items = select_rows(read_manifest(data_dir), split, limit, seed)
    key = _cache_key(data_dir, items, side)
    cache_dir = cache_location(data_dir, cache_dir) if not in_memory else Path(".")
    base = cache_dir / f"{split}-{key}"
    shape = (len(items), side, side, 3)
    meta_path = base.with_suffix(".json")
    if not in_memory and meta_path.exists() and base.with_suffix(".u8").exists():
        meta = json.loads(meta_path.read_text())
        images = np.memmap(base.with_suffix(".u8"), dtype=np.uint8, mode="r", shape=shape)
        valid = np.array(meta["valid"], dtype=bool)
        return ImageCache(items, images, valid, meta["skipped"], base.with_suffix(".u8"))
    if in_memory or not items:
        images = np.zeros(shape, dtype=np.uint8)
    else:
        tmp = base.with_suffix(f".u8.{os.getpid()}.part")
        images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    valid = np.zeros(len(items), dtype=bool)
    skipped: dict[str, str] = {}
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _DecodeSet(data_dir, items, side),
        batch_size=32,
        num_workers=workers,
        collate_fn=lambda b: b,
    )
    it = loader
    if progress:
        it = progress_bar(loader, desc=f"cache {split}", total=len(loader))
    for chunk in it:
        for i, arr, reason in chunk:
            if arr is None:
                skipped[items[i].path] = reason
            else:
                images[i] = arr
                valid[i] = True
    if in_memory or not items:
        return ImageCache(items, images, valid, skipped, None)
    images.flush()
    del images
    os.replace(tmp, base.with_suffix(".u8"))
    meta_tmp = meta_path.with_suffix(f".json.{os.getpid()}.part")
    meta_tmp.write_text(
        json.dumps(
            {
                "split": split,
                "side": side,
                "n": len(items),
                "valid": valid.tolist(),
                "skipped": skipped,
            }
        )
    )
    os.replace(meta_tmp, meta_path)  # last: a cache is reused only when both files are whole
    images = np.memmap(base.with_suffix(".u8"), dtype=np.uint8, mode="r", shape=shape)
    return ImageCache(items, images, valid, skipped, base.with_suffix(".u8"))
