"""Stage 04's optimizer and learning-rate schedule.

SGD with momentum 0.9 and Nesterov (or AdamW), no weight decay on BatchNorm and biases; the lr
follows :class:`WarmupCosine` per optimizer step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov) or AdamW; no weight decay on BatchNorm and biases."""
    wd = (
        cfg.weight_decay
        if cfg.weight_decay is not None
        else (1e-4 if cfg.optimizer == "sgd" else 0.05)
    )
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer must be sgd or adamw, not {cfg.optimizer!r}")


class WarmupCosine:
    """lr factor per optimizer step: linear warm-up to 1, then cosine down to ``min_ratio``.

    A picklable callable whose state is plain numbers (the scheduler's state_dict stays
    weights_only-safe)."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.01):
        self.total, self.warmup, self.min_ratio = (
            max(1, total_steps),
            max(0, warmup_steps),
            min_ratio,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
