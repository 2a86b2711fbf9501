"""Stage 04: train the ResNet-50 mask classifier, one metrics dict per epoch to every sink.

``BCEWithLogitsLoss`` on one logit (wearing_mask = 1). Defaults follow the assignment: 50 epochs,
batch 64, lr 0.01, SGD with momentum (AdamW selectable), linear warm-up then cosine decay per
step. On CUDA: mixed precision (bf16 where supported, else fp16 with a GradScaler) and
channels_last. Every epoch: validation loss/accuracy/ROC AUC, a threshold chosen on val, the
validation predictions in ``RUN_DIR/preds/val_epoch_XXX.csv`` (for stage 05), and checkpoints:
``last.pt`` (everything needed to resume) and ``best.pt`` (by val AUC; weights plus what inference
needs). Checkpoints hold only tensors and plain Python values and load with
``torch.load(..., weights_only=True)``. Re-running the same command resumes after the last
finished epoch and ends with the same weights as an uninterrupted run (CPU).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .augment import denormalize
from .checkpoint import (
    checkpoint_meta,
    load_checkpoint,
    load_model,
    plain,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .constants import PREDS_DIRNAME
from .loader import Batch, loader_items, make_loaders
from .metrics import accuracy, auc_or_nan, choose_threshold
from .model import build_model
from .predict import epoch_predictions_path, predict, write_predictions
from .sinks import CSVSink, EpochExtras, Sink, TensorBoardSink, WandbSink
from .system import autocast, default_workers, resolve_device

RESUME_KEYS = (
    "arch",
    "batch_size",
    "epochs",
    "lr",
    "optimizer",
    "weight_decay",
    "warmup_epochs",
    "limit",
    "val_limit",
    "seed",
    "aug",
    "loader",
    "pretrained",
)
"""Settings that must match for a run to resume (anything else may change between sessions)."""


# ------------------------------------------------------------------------------ helpers


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


def train(cfg: TrainConfig, sinks: list[Sink] | None = None) -> dict:
    """Train (or resume) a run in ``cfg.out``; returns a summary dict of the run."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    amp = cfg.amp and cuda
    channels_last = cfg.channels_last and cuda
    last_path, best_path = out / "last.pt", out / "best.pt"

    ckpt = None
    if cfg.resume and last_path.exists():
        ckpt = load_checkpoint(last_path, "cpu")
        old = ckpt["hparams"]
        diff = {
            k: (old.get(k), plain(getattr(cfg, k)))
            for k in RESUME_KEYS
            if old.get(k) != plain(getattr(cfg, k))
        }
        if diff:
            raise ValueError(
                f"{last_path} was made with other settings {diff}; use another --out "
                "or --no-resume to start over"
            )
        if ckpt["epoch"] + 1 >= cfg.epochs:
            print(
                f"{out}: already trained for {cfg.epochs} epochs (delete last.pt or use --no-resume to retrain)"
            )
            return (
                json.loads((out / "summary.json").read_text())
                if (out / "summary.json").exists()
                else {}
            )
    elif not cfg.resume:
        for stale in (last_path, best_path, out / "summary.json"):
            stale.unlink(missing_ok=True)
        for d in ("tb", "preds"):
            shutil.rmtree(out / d, ignore_errors=True)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, imagenet = build_model(cfg.arch, cfg.pretrained and ckpt is None)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    workers = default_workers() if cfg.workers is None else cfg.workers
    loaders = make_loaders(
        cfg.data,
        cfg.batch_size,
        cfg.loader,
        cfg.aug,
        workers,
        device,
        cfg.limit,
        cfg.val_limit,
        cfg.seed,
        splits=("train", "val", "test") if cfg.test_preds else ("train", "val"),
    )
    train_loader, val_loader = loaders["train"], loaders["val"]
    if len(train_loader) == 0:
        raise ValueError(f"no training images in {cfg.data}: run stages 01 and 02 first")
    steps = len(train_loader)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        WarmupCosine(cfg.epochs * steps, int(round(cfg.warmup_epochs * steps)), cfg.min_lr_ratio),
    )
    use_scaler = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    start, best_auc = 0, -1.0
    wandb_id = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start, best_auc = ckpt["epoch"] + 1, ckpt["best_auc"]
        wandb_id = ckpt.get("wandb_id") or None
        print(f"resuming {out} at epoch {start} (best val AUC so far {best_auc:.4f})")
    step_model = torch.compile(model) if cfg.compile else model
    crit = nn.BCEWithLogitsLoss()
    hparams = {k: plain(v) for k, v in asdict(cfg).items()} | {
        "imagenet_weights": imagenet,
        "device": str(device),
    }
    if sinks is None:
        sinks = [CSVSink(out, start)]
        if cfg.tensorboard:
            sinks.append(TensorBoardSink(out, start))
        wb = WandbSink(out, hparams, cfg.wandb, cfg.wandb_project, resume_id=wandb_id)
        wandb_id = wb.run_id
        sinks.append(wb)
    print(
        f"training {cfg.arch} on {device}: {len(loader_items(train_loader))} train / "
        f"{len(loader_items(val_loader))} val images, {steps} steps/epoch, epochs {start}..{cfg.epochs - 1}, "
        f"loader {cfg.loader}, amp {amp}, channels_last {channels_last}"
    )

    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start + cfg.stop_after)
    metrics: dict = {}
    for epoch in range(start, end):
        train_loader.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen, wait = 0, 0.0
        samples = None
        t0 = time.perf_counter()
        it = iter(train_loader)
        while True:
            tw = time.perf_counter()
            batch: Batch | None = next(it, None)
            wait += time.perf_counter() - tw
            if batch is None:
                break
            x, y = batch.images, batch.labels.float()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if epoch == 0 and samples is None:
                samples = denormalize(x[:16]).cpu()
            with autocast(device, amp):
                logits = step_model(x).squeeze(1)
            loss = crit(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.detach() * len(y)
            correct += ((logits.detach() > 0) == (y > 0.5)).sum()
            seen += len(y)
        if cuda:
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        val = predict(model, val_loader, device, amp, channels_last)
        val_auc = auc_or_nan(val["labels"], val["probs"])
        thr = choose_threshold(val["labels"], val["probs"])["threshold"]
        metrics = {
            "epoch": epoch,
            "train/loss": float(loss_sum) / max(1, seen),
            "train/acc": float(correct) / max(1, seen),
            "train/lr": opt.param_groups[0]["lr"],
            "train/images_per_s": seen / train_s,
            "train/data_wait_share": wait / train_s,
            "train/epoch_s": train_s,
            "val/loss": val["loss"],
            "val/acc": accuracy(val["labels"], val["probs"], 0.5),
            "val/auc": val_auc,
            "val/threshold": thr,
            "val/acc_at_threshold": accuracy(val["labels"], val["probs"], thr),
            "data/skipped": len(train_loader.skips) + len(val_loader.skips),
        }
        write_predictions(
            epoch_predictions_path(out, epoch), val["paths"], val["labels"], val["probs"]
        )
        score = val_auc if not math.isnan(val_auc) else -metrics["val/loss"]
        is_best = score > best_auc
        if is_best:
            best_auc = score
            save_checkpoint(
                best_path,
                checkpoint_meta(cfg.arch, thr, asdict(cfg))
                | {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "val_auc": val_auc,
                    "metrics": metrics,
                },
            )
        save_checkpoint(
            last_path,
            checkpoint_meta(cfg.arch, thr, asdict(cfg))
            | {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "best_auc": best_auc,
                "val_auc": val_auc,
                "metrics": metrics,
                "wandb_id": wandb_id or "",
            },
        )
        metrics["val/best_auc"] = best_auc
        extras = EpochExtras(val["labels"], val["probs"], samples)
        for s in sinks:
            s.log(epoch, metrics, extras)
        print(
            f"epoch {epoch:3d}  loss {metrics['train/loss']:.4f}  acc {metrics['train/acc']:.3f}  "
            f"val loss {metrics['val/loss']:.4f}  val acc {metrics['val/acc']:.3f}  val AUC {val_auc:.4f}  "
            f"lr {metrics['train/lr']:.2e}  {metrics['train/images_per_s']:.1f} img/s  "
            f"data wait {100 * metrics['train/data_wait_share']:.0f}%"
            + ("  *best" if is_best else "")
        )

    finished = end >= cfg.epochs
    summary = {
        "run_dir": str(out),
        "epochs_done": end,
        "finished": finished,
        "best_val_auc": best_auc,
        "last": metrics,
        "imagenet_weights": imagenet,
        "device": str(device),
        "skipped_images": {**train_loader.skips.paths, **val_loader.skips.paths},
    }
    if finished:
        if cfg.test_preds and best_path.exists() and "test" in loaders:
            best_model, _ = load_model(best_path, device)
            pred = predict(best_model, loaders["test"], device, amp, False)
            write_predictions(
                out / PREDS_DIRNAME / "test_best.csv", pred["paths"], pred["labels"], pred["probs"]
            )
            summary["test_auc_best"] = auc_or_nan(pred["labels"], pred["probs"])
        final = {"best_val_auc": best_auc} | {
            k: v for k, v in metrics.items() if k.startswith("val/")
        }
        for s in sinks:
            s.close(hparams, final)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    else:
        for s in sinks:
            if isinstance(s, TensorBoardSink):
                s.writer.close()
            elif isinstance(s, WandbSink) and s.run is not None:
                s.run.finish()
    return summary
