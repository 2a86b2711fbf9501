"""A training run between epochs (:class:`Run`) and how one is set up: fresh, resumed from
``last.pt`` (the settings that must match, the restored states, the message saying so), or as a
throw-away probe for timing and showing steps. The epochs themselves are :mod:`maskdet.training.train`'s.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.checkpoint import load_checkpoint, model_state, plain, set_rng_state
from ..core.constants import PREDS_DIRNAME, SPLITS
from ..core.inference import Preprocess
from ..core.model import build_model
from ..core.real import read_real_set
from ..core.system import cpu_has_fast_bf16, default_workers
from ..loading import distributed
from ..loading.loader import make_loaders
from .config import TrainConfig
from .optim import WarmupCosine, make_optimizer

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
RESUME_HINT = (
    "it cannot be resumed: start over with --no-resume (TrainConfig(resume=False)), or use "
    "another --out than {out}"
)
AFRESH_HINT = (
    "To train from the start instead: FRESH = True in notebook 04, or --no-resume on the "
    "command line (either removes the run's checkpoints, metrics, TensorBoard events and "
    "predictions first)."
)
"""How to start afresh, said whenever a run resumes or is already finished."""


@dataclass
class Run:
    """A training run between epochs: the model, its optimisation state, the loaders, the sinks."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    amp: bool
    channels_last: bool
    model: nn.Module
    step_model: nn.Module  # the model, or its DDP wrapper and/or torch.compile'd twin
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loaders: dict
    imagenet: bool
    real: tuple[torch.Tensor, np.ndarray] | None = None  # real_val: preprocessed crops, labels
    done: int = 0  # epochs finished before this call (a resumed run's last.pt epoch)
    best_auc: float = -1.0
    best_real: dict | None = None  # real_val metrics of the best epoch (this call)
    wandb_id: str | None = None
    cpu_bf16: bool = False  # bf16 autocast for the training steps on this CPU
    dist: distributed.DistEnv = distributed.SINGLE

    @property
    def hparams(self) -> dict:
        return {k: plain(v) for k, v in asdict(self.cfg).items()} | {
            "imagenet_weights": self.imagenet,
            "device": str(self.device),
            "ranks": self.dist.world_size,
        }


def resume_checkpoint(cfg: TrainConfig, clean: bool = True) -> dict | None:
    """``last.pt`` of ``cfg.out`` when the run resumes (its settings must match), else None;
    without ``resume`` the run's previous files are removed first (``clean``: by this rank)."""
    out = Path(cfg.out)
    last = out / "last.pt"
    if cfg.resume and last.exists():
        ckpt = load_checkpoint(last, "cpu", fix=RESUME_HINT.format(out=out))
        old = ckpt["hparams"]
        diff = {
            k: (old.get(k), plain(getattr(cfg, k)))
            for k in RESUME_KEYS
            if old.get(k) != plain(getattr(cfg, k))
        }
        if diff:
            raise ValueError(
                f"{last} was made with other settings {diff}; use another --out "
                "or --no-resume to start over"
            )
        return ckpt
    if not cfg.resume and clean:
        for stale in (last, out / "best.pt", out / "summary.json"):
            stale.unlink(missing_ok=True)
        for d in ("tb", PREDS_DIRNAME):
            shutil.rmtree(out / d, ignore_errors=True)
    return None


def prepare_run(
    cfg: TrainConfig,
    ckpt: dict | None,
    dist: distributed.DistEnv = distributed.SINGLE,
    device: torch.device | None = None,
) -> Run:
    """Seeds, model, loaders, optimizer, schedule and scaler of a run (restored from ``ckpt``);
    under torchrun (``dist``): DDP, this rank's parts of the batches (:mod:`.distributed`)."""
    device = device if device is not None else distributed.init_distributed(cfg.device)[1]
    cuda = device.type == "cuda"
    amp = cfg.amp and cuda
    cpu_bf16 = cfg.cpu_bf16 and device.type == "cpu"
    if cpu_bf16 and not cpu_has_fast_bf16():
        if dist.is_main:
            print(
                "NOTICE: --cpu-bf16 ignored: no AVX512-BF16/AMX on this CPU (bf16 would be slower)"
            )
        cpu_bf16 = False
    channels_last = cfg.channels_last and cuda
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    workers = default_workers() if cfg.workers is None else cfg.workers
    with distributed.local_rank_first(dist):
        model, imagenet = build_model(
            cfg.arch, cfg.pretrained and ckpt is None, verbose=dist.is_main
        )
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
            splits=SPLITS if cfg.test_preds else ("train", "val"),
            cache_dir=cfg.cache_dir,
            dist=dist,
        )
    if cfg.sync_bn and dist.world_size > 1:
        model = distributed.sync_batchnorm(model, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    steps = len(loaders["train"])
    if steps == 0:
        raise ValueError(f"no training images in {cfg.data}: run stages 01 and 02 first")
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        WarmupCosine(cfg.epochs * steps, int(round(cfg.warmup_epochs * steps)), cfg.min_lr_ratio),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    run = Run(
        cfg,
        Path(cfg.out),
        device,
        amp,
        channels_last,
        model,
        model,
        opt,
        sched,
        scaler,
        loaders,
        imagenet,
        cpu_bf16=cpu_bf16,
        dist=dist,
    )
    if ckpt is not None:
        restore_run(run, ckpt)
        if dist.is_main:
            print(
                f"resuming {run.out} at epoch {run.done + 1} of {cfg.epochs} (from "
                f"{run.out / 'last.pt'}, saved after epoch {run.done}; best val AUC so far "
                f"{run.best_auc:.4f}). {AFRESH_HINT}"
            )
    if cfg.real_val and dist.is_main:  # measured by rank 0 alone
        real = read_real_set(cfg.real_val, cfg.real_val_limit)
        run.real = (torch.from_numpy(Preprocess()(real.images)), np.asarray(real.labels))
        print(f"real-val: {real.counts()} from {cfg.real_val}")
    run.step_model = distributed.wrap_ddp(model, dist, device)
    if cfg.compile:
        run.step_model = torch.compile(run.step_model)
    return run


def restore_run(run: Run, ckpt: dict) -> None:
    """Load a ``last.pt`` checkpoint into ``run``, as PyTorch's tutorial on general checkpoints
    does (``model.load_state_dict(ckpt["model"])``, the optimizer's likewise), with the
    scheduler, gradient scaler and RNG states, so that training continues where it stopped."""
    run.model.load_state_dict(model_state(ckpt))
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    run.done, run.best_auc = ckpt["epoch"], ckpt["best_auc"]
    run.wandb_id = ckpt.get("wandb_id") or None


def probe_run(cfg: TrainConfig) -> Run:
    """A throw-away run with ``cfg``'s model, settings, device and loaders, but random
    initialisation, no real set, no ``torch.compile`` and no progress bar: for timing steps
    (:func:`maskdet.training.estimate.estimate_training_time`) and for showing one training step
    (notebook 04). Nothing is written to ``cfg.out``."""
    probe = replace(cfg, pretrained=False, real_val=None, compile=False, progress=False)
    return prepare_run(probe, None)
