"""Stage 04: train the ResNet-50 mask classifier, one metrics dict per epoch to every sink.

``BCEWithLogitsLoss`` on one logit (wearing_mask = 1). Defaults follow the assignment: 50 epochs,
batch 64, lr 0.01, SGD with momentum (AdamW selectable), linear warm-up then cosine decay per
step. On CUDA: mixed precision (bf16 where supported, else fp16 with a GradScaler) and
channels_last. Every epoch: validation loss/accuracy/ROC AUC, a threshold chosen on val, the
validation predictions in ``RUN_DIR/preds/val_epoch_XXX.csv`` (for stage 05), with ``real_val``
the same model measured on real crops (``real/auc``, ``real/recall``, ``real/specificity`` at the
val threshold: an honest estimate, since neither the checkpoint nor the threshold is chosen on
them), and checkpoints:
``last.pt`` (everything needed to resume) and ``best.pt`` (by val AUC; weights plus what inference
needs). Checkpoints hold only tensors and plain Python values and load with
``torch.load(..., weights_only=True)``. Re-running the same command resumes after the last
finished epoch and ends with the same weights as an uninterrupted run (CPU); how a run is set
up, fresh or resumed, is :mod:`maskdet.training.run_setup`'s.

Epochs are numbered from 1 everywhere: the progress bar (``epoch 1/3``), the printed lines, the
``epoch`` of the metrics rows, TensorBoard's and WandB's steps, the prediction files
(``val_epoch_001.csv``) and a checkpoint's ``epoch`` (the last finished epoch, which is also the
number of epochs done).

Under ``torchrun --nproc_per_node N -m maskdet train ...`` the loop runs in N processes
(:mod:`maskdet.loading.distributed`): DDP, each rank on its part of every global batch (``batch_size``
and ``lr`` keep their meaning), val predictions gathered before the metrics, rank 0 alone
writing files and sinks; checkpoints resume under any rank count, or none.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import checkpoint_meta, load_model, rng_state, save_checkpoint
from ..core.checks import check_both_classes, check_stage02
from ..core.constants import PREDS_DIRNAME
from ..core.guard import DATA_DIR_MARK, claim_folder, locked
from ..core.inference import epoch_predictions_path, write_predictions
from ..core.metrics import accuracy, auc_or_nan, choose_threshold
from ..core.progress import bar as progress_bar
from ..core.real import real_metrics
from ..core.system import autocast
from ..loading import distributed
from ..loading.augment import denormalize
from ..loading.batch import Batch
from ..loading.loader import loader_items
from .config import TrainConfig
from .run_setup import AFRESH_HINT, Run, prepare_run, resume_checkpoint
from .scoring import merge_predictions, predict
from .sinks import CSVSink, EpochExtras, Sink, TensorBoardSink, WandbSink


def make_criterion() -> nn.Module:
    """The loss: ``BCEWithLogitsLoss`` on the one logit (sigmoid and binary cross-entropy in one
    numerically stable step; label 1 = wearing_mask)."""
    return nn.BCEWithLogitsLoss()


def default_sinks(run: Run) -> list[Sink]:
    """CSV, TensorBoard (unless switched off) and WandB (its mode from ``cfg.wandb``)."""
    cfg = run.cfg
    sinks: list[Sink] = [CSVSink(run.out, run.done)]
    if cfg.tensorboard:
        sinks.append(TensorBoardSink(run.out, run.done))
    wb = WandbSink(run.out, run.hparams, cfg.wandb, cfg.wandb_project, resume_id=run.wandb_id)
    run.wandb_id = wb.run_id
    sinks.append(wb)
    return sinks


def train_step(run: Run, batch: Batch, crit: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on ``batch``: (the detached mean loss of its images, the logits).
    The batch moves to the model's device (no copy when the loader already put it there), the
    forward pass gives one logit per image, the loss ``crit`` (``BCEWithLogitsLoss``) is
    back-propagated and the optimizer and the lr schedule take one step. Under DDP, which
    averages the ranks' gradients, this rank's summed loss is scaled so that the average is the
    gradient of the global batch's mean loss."""
    x = batch.images.to(run.device, non_blocking=True)
    y = batch.labels.to(run.device, non_blocking=True).float()
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.amp or run.cpu_bf16):
        logits = run.step_model(x).squeeze(1)  # forward: (B, 1) -> (B,) logits
    if run.dist.enabled:
        part_sum = distributed.batch_loss_sum(logits.float(), y)
        loss, mean = part_sum * (run.dist.world_size / batch.total), part_sum / len(y)
    else:
        loss = mean = crit(logits.float(), y)
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # backward (the scaler is a no-op unless fp16 on CUDA)
    run.scaler.step(run.opt)  # the optimizer's step
    run.scaler.update()
    run.sched.step()
    return mean.detach(), logits.detach()


PROGRESS_EVERY_S = 0.5
"""The step bar's loss and images/s are refreshed at most this often (reading the loss waits
for the GPU)."""


def train_one_epoch(run: Run, epoch: int, crit: nn.Module) -> tuple[dict, torch.Tensor | None]:
    """One pass over the training loader in ``epoch`` (numbered from 1): the epoch's train
    metrics and (epoch 1) a batch of augmented sample images for the sinks. A text bar
    (:mod:`maskdet.core.progress`) shows the steps with the running loss and images/s
    (``cfg.progress``)."""
    loader, device = run.loaders["train"], run.device
    loader.set_epoch(epoch)
    run.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen, wait = 0, 0.0
    samples = None
    bar = progress_bar(  # the epoch line follows it
        final=False,
        total=len(loader),
        desc=f"epoch {epoch}/{run.cfg.epochs}",
        unit="step",
        leave=False,
        disable=not (run.cfg.progress and run.dist.is_main),
    )
    shown = t0 = time.perf_counter()
    it = iter(loader)
    while True:
        tw = time.perf_counter()
        batch: Batch | None = next(it, None)
        wait += time.perf_counter() - tw
        if batch is None:
            break
        if epoch == 1 and samples is None:
            samples = denormalize(batch.images[:16]).cpu()
        loss, logits = train_step(run, batch, crit)
        y = batch.labels
        loss_sum += loss * len(y)
        correct += ((logits > 0) == (y > 0.5)).sum()
        seen += len(y)
        bar.update()
        now = time.perf_counter()
        if not bar.disable and now - shown >= PROGRESS_EVERY_S:
            shown = now
            bar.set_postfix(
                loss=f"{float(loss_sum) / seen:.4f}",
                img_s=f"{seen / (now - t0):.0f}",
                refresh=False,
            )
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    if run.dist.enabled:  # the epoch's totals over every rank
        totals = distributed.all_sum(torch.stack([loss_sum.double(), correct.double()]), run.dist)
        loss_sum, correct = totals[0], totals[1]
        seen = int(distributed.all_sum(torch.tensor([seen], device=device), run.dist))
    metrics = {
        "epoch": epoch,
        "train/loss": float(loss_sum) / max(1, seen),
        "train/acc": float(correct) / max(1, seen),
        "train/lr": run.opt.param_groups[0]["lr"],
        "train/images_per_s": seen / train_s,
        "train/data_wait_share": wait / train_s,
        "train/epoch_s": train_s,
    }
    return metrics, samples


def validate(run: Run, epoch: int) -> tuple[dict, dict]:
    """The val split's predictions (saved for stage 05) and metrics, with the threshold chosen
    on them (:func:`maskdet.core.metrics.choose_threshold`). Under torchrun each rank predicts its
    part and every rank gets all of them (the same metrics everywhere)."""
    val = predict(run.model, run.loaders["val"], run.device, run.amp, run.channels_last)
    if run.dist.enabled:
        val = merge_predictions(distributed.gather_objects(val, run.dist))
    y, p = val["labels"], val["probs"]
    thr = choose_threshold(y, p)["threshold"]
    if run.dist.is_main:
        write_predictions(epoch_predictions_path(run.out, epoch), val["paths"], y, p)
    metrics = {
        "val/loss": val["loss"],
        "val/acc": accuracy(y, p, 0.5),
        "val/auc": auc_or_nan(y, p),
        "val/threshold": thr,
        "val/acc_at_threshold": accuracy(y, p, thr),
    }
    if run.real is not None:
        metrics |= real_metrics(run.model, *run.real, thr, run.device, run.amp, run.channels_last)
    return metrics, val


def save_epoch(run: Run, epoch: int, metrics: dict, is_best: bool) -> None:
    """``best.pt`` (weights and what inference needs) when the epoch is the best so far, and
    ``last.pt`` (everything needed to resume) every epoch."""
    meta = checkpoint_meta(run.cfg.arch, metrics["val/threshold"], asdict(run.cfg))
    state = {"epoch": epoch, "model": run.model.state_dict()}
    if is_best:
        save_checkpoint(
            run.out / "best.pt",
            meta | state | {"val_auc": metrics["val/auc"], "metrics": metrics},
        )
    save_checkpoint(
        run.out / "last.pt",
        meta
        | state
        | {
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": rng_state(),
            "best_auc": run.best_auc,
            "val_auc": metrics["val/auc"],
            "metrics": metrics,
            "wandb_id": run.wandb_id or "",
        },
    )


RUN_RECORDS = (
    "last.pt",
    "best.pt",
    "metrics.jsonl",
    "tb",
    "preds",
    "ablations",
    "eval_test.json",
    "eval_real.json",
    "notebooks",  # `python -m maskdet run` writes the executed chapters there before 04 trains
    "report.html",
    DATA_DIR_MARK,
)
"""What a RUN_DIR of this project holds (older runs have no mark): train refuses any other
folder that holds files, so that it never writes its checkpoints and metrics over a user's own."""


def train(cfg: TrainConfig, sinks: list[Sink] | None = None) -> dict:
    """Train (or resume) a run in ``cfg.out``: every epoch trains, validates, saves checkpoints
    and hands one metrics dict to every sink. Returns a summary dict of the run.

    RUN_DIR is locked for the run and DATA_DIR shared with other readers: a second run on the
    same RUN_DIR, or a stage rewriting DATA_DIR meanwhile, is refused, naming the process. Under
    ``torchrun`` only rank 0 takes the locks (the ranks share the run); a rank that loses another
    one (dead, killed, or silent for ``dist_timeout`` seconds) ends with one message saying how
    to resume."""
    if int(os.environ.get("RANK", "0")) != 0:
        return _run_ranks(cfg, sinks)
    claim_folder(cfg.out, RUN_RECORDS, "train")  # never a folder of the user's own files
    with locked(cfg.out, "training"), locked(cfg.data, "training reads it", shared=True):
        return _run_ranks(cfg, sinks)


def _run_ranks(cfg: TrainConfig, sinks: list[Sink] | None) -> dict:
    dist, device = distributed.init_distributed(cfg.device, cfg.dist_timeout)
    with distributed.lost_rank_ends_job(dist, Path(cfg.out) / "last.pt"):
        summary = _fit(cfg, sinks, dist, device)
    distributed.shutdown(dist)
    return summary


def _fit(cfg: TrainConfig, sinks: list[Sink] | None, dist: distributed.DistEnv, device) -> dict:
    check_both_classes(check_stage02(cfg.data))  # both classes in train and val, or the fix
    out, main = Path(cfg.out), dist.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.check_shared_dir(out, dist)
    ckpt = resume_checkpoint(cfg, clean=main)
    done = 0 if ckpt is None else ckpt["epoch"]
    distributed.check_agree(done, dist, f"the last epoch in {out}/last.pt")
    if done >= cfg.epochs:
        if main:
            print(
                f"{out}: already trained, epoch {done} of {cfg.epochs} done ({out / 'last.pt'}): "
                f"nothing left to train. {AFRESH_HINT}"
            )
        summary_path = out / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.exists() else {}
    run = prepare_run(cfg, ckpt, dist, device)
    crit = make_criterion()
    sinks = (default_sinks(run) if sinks is None else sinks) if main else []
    train_loader, val_loader = run.loaders["train"], run.loaders["val"]
    distributed.check_agree(len(train_loader), dist, f"the train batches per epoch in {cfg.data}")
    if main:
        print(
            f"training {cfg.arch} on {run.device}: {len(loader_items(train_loader))} train / "
            f"{len(loader_items(val_loader))} val images, {len(train_loader)} steps/epoch, "
            f"epochs {run.done + 1}..{cfg.epochs}, loader {cfg.loader}, amp {run.amp}, "
            f"cpu_bf16 {run.cpu_bf16}, channels_last {run.channels_last}"
            + (f", {dist.world_size} ranks ({dist.backend}), sync_bn {cfg.sync_bn}" * dist.enabled)
        )
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, run.done + cfg.stop_after)
    metrics: dict = {}
    for epoch in range(run.done + 1, end + 1):  # numbered from 1
        metrics, samples = train_one_epoch(run, epoch, crit)
        val_metrics, val = validate(run, epoch)
        metrics |= val_metrics | {"data/skipped": len(train_loader.skips) + len(val_loader.skips)}
        val_auc = metrics["val/auc"]
        score = val_auc if not math.isnan(val_auc) else -metrics["val/loss"]
        is_best = score > run.best_auc
        if is_best:
            run.best_auc = score
            run.best_real = {k: v for k, v in metrics.items() if k.startswith("real/")}
        if main:
            save_epoch(run, epoch, metrics, is_best)
        metrics["val/best_auc"] = run.best_auc
        extras = EpochExtras(val["labels"], val["probs"], samples)
        for s in sinks:
            s.log(epoch, metrics, extras)
        if not main:
            continue
        print(
            f"epoch {epoch:3d}/{cfg.epochs}  loss {metrics['train/loss']:.4f}  acc {metrics['train/acc']:.3f}  "
            f"val loss {metrics['val/loss']:.4f}  val acc {metrics['val/acc']:.3f}  "
            f"val AUC {val_auc:.4f}  "
            + (f"real AUC {metrics['real/auc']:.4f}  " if "real/auc" in metrics else "")
            + f"lr {metrics['train/lr']:.2e}  "
            f"{metrics['train/images_per_s']:.1f} img/s  "
            f"data wait {100 * metrics['train/data_wait_share']:.0f}%"
            + ("  *best" if is_best else "")
        )

    finished = end >= cfg.epochs
    summary = {
        "run_dir": str(out),
        "epochs_done": end,
        "finished": finished,
        "best_val_auc": run.best_auc,
        "real_at_best": run.best_real,
        "last": metrics,
        "imagenet_weights": run.imagenet,
        "device": str(run.device),
        "ranks": dist.world_size,
        "skipped_images": {**train_loader.skips.paths, **val_loader.skips.paths},
    }
    if not finished:  # a cut: the next call resumes; the sinks close without a final summary
        for s in sinks:
            s.close()
        return summary
    best = out / "best.pt"
    distributed.barrier(dist)  # rank 0 has written best.pt
    if cfg.test_preds and best.exists():
        best_model, _ = load_model(best, run.device)
        pred = predict(best_model, run.loaders["test"], run.device, run.amp, False)
        if dist.enabled:
            pred = merge_predictions(distributed.gather_objects(pred, dist))
        if main:
            write_predictions(
                out / PREDS_DIRNAME / "test_best.csv", pred["paths"], pred["labels"], pred["probs"]
            )
        summary["test_auc_best"] = auc_or_nan(pred["labels"], pred["probs"])
    if not main:
        return summary
    final = {"best_val_auc": run.best_auc} | {
        k: v for k, v in metrics.items() if k.startswith("val/")
    }
    for s in sinks:
        s.close(run.hparams, final)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
