"""Probabilities for a loader's images: the model over the val or test loader, as training does
every epoch and evaluation does for the test split (:func:`predict`, :func:`predict_split`), and
the ranks' results merged into one under torchrun (:func:`merge_predictions`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..core.progress import bar as progress_bar
from ..core.system import autocast
from ..loading.loader import loader_items, make_loaders


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    progress: str | None = None,
) -> dict:
    """Probabilities for every image a loader yields: ``paths``, ``labels``, ``probs``, ``loss``
    (mean per image), the loader's ``indices`` and image count ``n`` (``progress``: the
    description of a text bar (:mod:`maskdet.core.progress`) over the batches; None: no bar)."""
    model.eval()
    crit = nn.BCEWithLogitsLoss(reduction="sum")
    items = loader_items(loader)
    labels, probs, idx = [], [], []
    loss = torch.zeros((), device=device)
    bar = dict(desc=progress, total=len(loader), unit="batch", disable=progress is None)
    for batch in progress_bar(loader, **bar):
        x = (
            batch.images.contiguous(memory_format=torch.channels_last)
            if channels_last
            else batch.images
        )
        with autocast(device, amp):
            logits = model(x).squeeze(1).float()
        loss += crit(logits, batch.labels.float())
        labels.append(batch.labels.cpu())
        probs.append(torch.sigmoid(logits).cpu())
        idx.append(batch.indices)
    n = sum(len(v) for v in labels)
    labels_np = torch.cat(labels).numpy() if labels else np.zeros(0)
    idx_np = torch.cat(idx).numpy() if idx else np.zeros(0, dtype=int)
    return {
        "paths": [items[i].path for i in idx_np],
        "labels": labels_np,
        "probs": torch.cat(probs).numpy() if probs else np.zeros(0),
        "loss": float(loss) / max(1, n),
        "indices": idx_np,
        "n": n,
    }


def merge_predictions(parts: list[dict]) -> dict:
    """The ranks' :func:`predict` results as one, in the loader's order (by index), as a single
    process would have predicted them; the loss is the mean over all images."""
    if len(parts) == 1:
        return parts[0]
    idx = np.concatenate([p["indices"] for p in parts])
    order = np.argsort(idx, kind="stable")
    n = sum(p["n"] for p in parts)
    paths = [path for p in parts for path in p["paths"]]
    return {
        "paths": [paths[i] for i in order],
        "labels": np.concatenate([p["labels"] for p in parts])[order],
        "probs": np.concatenate([p["probs"] for p in parts])[order],
        "loss": sum(p["loss"] * p["n"] for p in parts) / max(1, n),
        "indices": idx[order],
        "n": n,
    }


def predict_split(
    model: nn.Module,
    data_dir: str | os.PathLike,
    split: str,
    limit: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int | None = None,
    rows: list[dict[str, str]] | None = None,
    progress: bool = False,
) -> dict:
    """Probabilities for a split with the deterministic val/test view (cached path), and the
    images that could not be read (``skipped``). ``rows``: the manifest, when already read;
    ``progress``: a bar over the batches."""
    loader = make_loaders(
        data_dir,
        batch_size=batch_size,
        mode="cached",
        splits=(split,),
        limit=limit,
        val_limit=limit,
        device=device,
        workers=workers,
        rows=rows,
    )[split]
    pred = predict(
        model, loader, torch.device(device), progress=f"evaluate {split}" if progress else None
    )
    pred["skipped"] = dict(loader.skips.paths)
    return pred
