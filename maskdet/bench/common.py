"""What the benchmarks share: the faces they run on, images/s through a loader, rounds in turn."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.constants import LFW_ARCHIVE
from ..core.manifest import read_manifest, write_manifest
from ..faces.data import download_and_prepare
from ..loading.batch import Batch
from ..synthesis.synthesis import synthesize_dataset


def masked_data(
    data: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    images: int = 200,
) -> Path:
    """``data``, else a DATA_DIR of about ``images`` faces and their builtin masks, made once
    from ``source`` (default: the shared LFW archive) in ``$TMPDIR``."""
    if data:
        return Path(data)
    n_id = max(3, images // 2)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"maskdet-bench-loader-{n_id}"
    if not (out / "manifest.csv").exists():
        download_and_prepare(str(source or LFW_ARCHIVE), out, limit_identities=n_id, progress=False)
        synthesize_dataset(out, backend="builtin")
    return out


def unmasked_faces(
    work: Path,
    data: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    images: int = 200,
) -> Path:
    """A DATA_DIR in ``work`` holding exactly ``images`` stage-01 faces (from ``data`` or from
    ``source``, default the shared LFW archive) and no masks."""
    if data:
        src_dir = Path(data)
    else:
        src_dir = work / "prepared"
        n_ids = max(3, images)  # LFW has >= 1 image per identity: enough faces
        download_and_prepare(
            str(source or LFW_ARCHIVE),
            src_dir,
            limit_identities=n_ids,
            cache_dir=work / "raw",
            progress=False,
        )
    rows = [
        r
        for r in read_manifest(src_dir)
        if r["label"] == "not_wearing_mask" and r["status"] == "ok"
    ]
    rows = sorted(rows, key=lambda r: r["pair_id"])[:images]
    out = work / "data"
    for r in rows:
        (out / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_dir / r["path"], out / r["path"])
    write_manifest(out, rows)
    return out


def throughput(loader, batches: int, device: torch.device, warmup: int = 1) -> float:
    """Images/s over ``batches`` batches (after ``warmup``), cycling the loader as needed.

    Each epoch's iterator is closed before returning, so that DataLoader workers still
    prefetching do not steal CPU from the next measurement."""
    n = seen = 0
    t0 = None
    epoch = 0
    elapsed = 0.0
    while seen < batches + warmup:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        it = iter(loader)
        try:
            for b in it:
                x = b.images if isinstance(b, Batch) else b[0]
                if device.type == "cuda":  # synchronised only where the clock is read
                    x = x.to(device, non_blocking=True)
                seen += 1
                if seen == warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                elif seen > warmup:
                    n += x.shape[0]
                if seen >= batches + warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    elapsed = time.perf_counter() - t0
                    break
        finally:
            shutdown = getattr(it, "_shutdown_workers", None) or getattr(it, "close", None)
            if shutdown:
                shutdown()
            del it
        epoch += 1
    return n / elapsed


def in_turns(measures: dict[str, Callable[[int], object]], rounds: int) -> dict[str, list]:
    """Every measure once per round, in turns (round ``r`` is passed to each), so that a busy
    shared machine slows them alike; the results of each, in round order."""
    out: dict[str, list] = {name: [] for name in measures}
    for r in range(rounds):
        for name, measure in measures.items():
            out[name].append(measure(r))
    return out
