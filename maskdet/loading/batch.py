"""What the loaders yield: a :class:`Batch`, the :class:`Skipped` record of an image that cannot
be used, :func:`collate_skip` (the per-image path's collate) and :class:`SkipCounter`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import torch

from ..core.constants import IMAGE_SIZE


@dataclass
class Skipped:
    """What a dataset returns instead of a sample when the image cannot be used."""

    index: int
    path: str
    reason: str


@dataclass
class Batch:
    """A training batch: images (B,3,112,112 float), labels (B,), dataset indices (B,), skips;
    ``global_size``: the images of the global batch this is a rank's part of (0: all here)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[Skipped] = field(default_factory=list)
    global_size: int = 0

    @property
    def total(self) -> int:
        """Images in the global batch (under DDP the ranks' parts together)."""
        return self.global_size or len(self.labels)

    def pin_memory(self) -> Batch:
        pinned = (t.pin_memory() for t in (self.images, self.labels, self.indices))
        return replace(self, **dict(zip(("images", "labels", "indices"), pinned)))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        images, labels = (
            t.to(device, non_blocking=non_blocking) for t in (self.images, self.labels)
        )
        return replace(self, images=images, labels=labels)


def collate_skip(samples: list) -> Batch:
    """Stack good samples; drop :class:`Skipped` ones but keep them in ``Batch.skipped``."""
    good = [s for s in samples if not isinstance(s, Skipped)]
    bad = [s for s in samples if isinstance(s, Skipped)]
    if not good:
        return Batch(
            torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE),
            torch.empty(0),
            torch.empty(0, dtype=torch.long),
            bad,
        )
    return Batch(
        torch.stack([torch.as_tensor(s[0]) for s in good]),
        torch.tensor([float(s[1]) for s in good]),
        torch.tensor([s[2] for s in good], dtype=torch.long),
        bad,
    )


class SkipCounter:
    """Accumulates skipped images over the batches seen (``counts`` by reason, ``paths``)."""

    def __init__(self):
        self.paths: dict[str, str] = {}

    def add(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            self.paths[s.path] = s.reason

    @property
    def counts(self) -> Counter:
        return Counter(self.paths.values())

    def __len__(self) -> int:
        return len(self.paths)
