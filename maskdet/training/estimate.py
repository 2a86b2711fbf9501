"""How long a training run will take, from a short timed warm-up: a few real training steps
of the run's model, settings, device and loaders (notebook 04 prints it before it trains)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import load_checkpoint
from ..loading.loader import first_batches
from .config import TrainConfig
from .run_setup import Run, probe_run
from .train import make_criterion, train_step


def estimate_training_time(
    cfg: TrainConfig, steps: int = 6, warmup: int = 2, run: Run | None = None
) -> dict:
    """How long ``train(cfg)`` will take, from a short timed warm-up: ``warmup`` untimed and
    ``steps`` timed real training steps, and two timed validation batches, on a throw-away
    model with the run's settings, device and loaders (building the image cache the run then
    reuses). Prints one line; returns the numbers. Epochs already done in ``RUN_DIR`` (resume)
    are not counted. ``run``: a :func:`maskdet.training.run_setup.probe_run` of ``cfg`` already made."""
    last = Path(cfg.out) / "last.pt"
    done = load_checkpoint(last, "cpu")["epoch"] if cfg.resume and last.exists() else 0
    run = probe_run(cfg) if run is None else run
    crit = make_criterion()
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

    train_loader.set_epoch(1)
    run.model.train()
    batches = first_batches(train_loader, warmup + steps)
    warmup = max(0, min(warmup, len(batches) - 1))  # a loader of few batches: time at least one
    step_s = timed(batches, lambda b: train_step(run, b, crit))[warmup:] or [float("nan")]
    run.model.eval()
    with torch.no_grad():
        val_s = timed(first_batches(val_loader, 2), lambda b: run.model(b.images)) or [0.0]
    per_step = float(np.median(step_s))
    per_val_batch = float(np.median(val_s))
    epochs = max(0, cfg.epochs - done)
    epoch_s = per_step * len(train_loader) + per_val_batch * len(val_loader)
    total = epoch_s * epochs
    est = {
        "epochs": epochs,
        "steps_per_epoch": len(train_loader),
        "step_s": per_step,
        "images_per_s": cfg.batch_size / per_step if per_step else float("nan"),
        "epoch_s": epoch_s,
        "total_s": total,
        "device": str(run.device),
    }
    if not epochs:
        print(
            f"estimate: nothing left to train in {cfg.out} ({done} of {cfg.epochs} epochs done); "
            f"a step takes {per_step:.2f} s on {run.device}"
        )
        return est
    print(
        f"estimate: {epochs} epoch{'s' * (epochs != 1)} x {len(train_loader)} steps at {per_step:.2f} s/step "
        f"({est['images_per_s']:.0f} images/s) + validation = about {_duration(total)} on "
        f"{run.device} (from {len(step_s)} timed steps after {warmup} warm-up steps; "
        "without the real-face checks)"
    )
    return est


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "an unknown time"
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
