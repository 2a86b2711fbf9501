"""How long a training run will take, from a short timed warm-up: a few real training steps
of the run's model, settings, device and loaders (notebook 04 prints it before it trains)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .loader import Batch
from .train import prepare_run, train_step


def estimate_training_time(cfg: TrainConfig, steps: int = 6, warmup: int = 2) -> dict:
    """How long ``train(cfg)`` will take, from a short timed warm-up: ``warmup`` untimed and
    ``steps`` timed real training steps, and two timed validation batches, on a throw-away
    model with the run's settings, device and loaders (building the image cache the run then
    reuses). A split shorter than ``warmup + steps`` batches gives fewer warm-up steps, never
    fewer than one timed step. Prints one line; returns the numbers. Epochs already done in
    ``RUN_DIR`` (resume) are not counted: a finished run prints that nothing is left to train."""
    last = Path(cfg.out) / "last.pt"
    done = load_checkpoint(last, "cpu")["epoch"] + 1 if cfg.resume and last.exists() else 0
    epochs = max(0, cfg.epochs - done)
    if not epochs:
        print(
            f"estimate: nothing left to train, {cfg.out} has finished its {done} epochs (train "
            "resumes; give another RUN_DIR, or delete this one, to train afresh)"
        )
        return {"epochs": 0, "total_s": 0.0, "done": done}
    probe = dataclasses.replace(cfg, pretrained=False, real_val=None, compile=False, progress=False)
    run = prepare_run(probe, None)
    crit = nn.BCEWithLogitsLoss()
    train_loader, val_loader = run.loaders["train"], run.loaders["val"]

    def timed(batches, step) -> list[float]:
        out = []
        for batch in batches:
            t0 = time.perf_counter()
            step(batch)
            if run.device.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
        return out

    train_loader.set_epoch(0)
    run.model.train()
    batches = _first(train_loader, warmup + steps)
    if not batches:
        print(f"estimate: none, the train split of {cfg.data} gives no batch")
        return {"epochs": epochs, "steps_per_epoch": 0, "done": done}
    warmup = min(warmup, len(batches) - 1)  # a short split: keep at least one timed step
    step_s = timed(batches, lambda b: train_step(run, b, crit))[warmup:]
    run.model.eval()
    with torch.no_grad():
        val_s = timed(_first(val_loader, 2), lambda b: run.model(b.images)) or [0.0]
    per_step = float(np.median(step_s))
    per_val_batch = float(np.median(val_s))
    epoch_s = per_step * len(train_loader) + per_val_batch * len(val_loader)
    total = epoch_s * epochs
    est = {
        "epochs": epochs,
        "done": done,
        "steps_per_epoch": len(train_loader),
        "step_s": per_step,
        "images_per_s": cfg.batch_size / per_step,
        "epoch_s": epoch_s,
        "total_s": total,
        "device": str(run.device),
    }
    print(
        f"estimate: {epochs} epoch{'s' * (epochs != 1)} x {len(train_loader)} steps at {per_step:.2f} s/step "
        f"({est['images_per_s']:.0f} images/s) + validation = about {_duration(total)} on "
        f"{run.device} (from {len(step_s)} timed steps after {warmup} warm-up steps; "
        "without the real-face checks)"
    )
    return est


def _first(loader, n: int) -> list[Batch]:
    """The first ``n`` batches of ``loader`` (its iterator closed, so that a background
    producer stops)."""
    it = iter(loader)
    try:
        return [b for _, b in zip(range(n), it)]
    finally:
        it.close()


def _duration(seconds: float) -> str:
    """``seconds`` as "N s", "N min" or "H h MM min"."""
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
