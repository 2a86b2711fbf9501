"""``python -m maskdet bench train``: training images/s of the model alone and of the full
pipeline (cached loader, augmentation, step), side by side per setting."""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch import nn

from ..core.constants import IMAGE_SIZE
from ..core.model import build_model
from ..core.system import autocast, cpu_has_fast_bf16, resolve_device
from ..loading.loader import make_loaders
from .common import in_turns, masked_data, throughput
from .ddp import bench_ddp


def _time_steps(model, opt, crit, batches, device, amp, channels_last, warmup=1) -> float:
    """Training images/s over the given batches (after ``warmup`` of them)."""
    n, t0 = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss = crit(model(x).squeeze(1).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def _bench_model(device: torch.device, arch: str, channels_last: bool, compile_mode: str | None):
    """A fresh model in train mode, its SGD optimizer, the (compiled) step model, warm-up steps."""
    model, _ = build_model(arch, pretrained=False, verbose=False)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if compile_mode is None:
        return model, opt, model, 1
    return model, opt, torch.compile(model, mode=compile_mode), 3


BENCH_SETTINGS = [
    # name, AMP, channels_last, torch.compile mode (None: eager), CUDA only
    ("eager fp32", False, False, None, False),
    ("channels_last fp32", False, True, None, False),
    ("CPU bf16 autocast (--cpu-bf16)", True, False, None, False),
    ("channels_last + AMP", True, True, None, True),
    ("channels_last + AMP + compile", True, True, "default", True),
    ("channels_last + AMP + compile, CUDA graphs", True, True, "reduce-overhead", True),
]
TRAIN_DEFAULT_SETTING = "channels_last + AMP"
"""What ``train`` uses on CUDA (``--amp --channels-last``, no compile)."""
CPU_BF16_SETTING = "CPU bf16 autocast (--cpu-bf16)"
"""Measured only on a CPU that computes bf16 in hardware (AVX512-BF16 / AMX)."""


def bench_train(
    data: str | None = None,
    source: str | None = None,
    images: int = 200,
    device: str | None = None,
    arch: str = "resnet50",
    batches: int | None = None,
    rounds: int | None = None,
    batch_size: int = 64,
    compile: bool = True,
    ddp: bool = False,
    nproc: int = 1,
) -> dict:
    """Training images/s at 112x112, batch ``batch_size``, per setting:
    the model alone (one real augmented batch reused) and the full pipeline (cached loader,
    augmentation, step on real batches), side by side in turns for ``rounds`` rounds (median),
    with their ratio.

    On a GPU the training default is also timed with the loader's background preparation
    switched off, and the loader alone (augmented images/s on the GPU, no model) shows the data
    path's headroom. ``compile``: include the ``torch.compile`` settings (CUDA only; minutes of
    compilation). ``data``: a DATA_DIR (default: about ``images`` faces from ``source``, masked by
    the builtin renderer). ``ddp``: instead, the step in one plain process against the same
    under ``torchrun --nproc_per_node nproc`` (:func:`maskdet.bench.ddp.bench_ddp`)."""
    if ddp:
        return bench_ddp(data, source, images, device, arch, batches, rounds, batch_size, nproc)
    device = resolve_device(device)
    cuda = device.type == "cuda"
    n = batches or (100 if cuda else 3)
    warm_data = 3 if cuda else 1
    rounds = rounds or (3 if cuda else 1)
    bs = batch_size
    print(
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if cuda else "")
        + f"; torch {torch.__version__}; {arch} at {IMAGE_SIZE}x{IMAGE_SIZE}, batch {bs}, "
        f"{n} timed batches after warm-up, {rounds} rounds (median); "
        f"torch threads {torch.get_num_threads()}"
    )
    torch.manual_seed(0)
    crit = nn.BCEWithLogitsLoss()
    data_dir = masked_data(data, source, images)
    loader = make_loaders(data_dir, bs, "cached", "default", None, device, splits=("train",))[
        "train"
    ]
    if len(loader.index) < bs:
        raise ValueError(f"{data_dir} has {len(loader.index)} train images: fewer than a batch")

    def real_batches(count: int):
        epoch, k = 0, 0
        while True:
            loader.set_epoch(epoch)
            for b in loader:
                if len(b.labels) == bs:
                    yield b.images, b.labels.float()
                    k += 1
                    if k >= count:
                        return
            epoch += 1

    # the model alone trains on one real batch, reused: the loader's values and memory layout
    x, y = next(real_batches(1))
    print(f"  {'setting':44s} {'model only':>10s} {'pipeline':>10s}  ratio   (images/s)")
    model_only, full, ratio, out = {}, {}, {}, {}
    for name, amp, cl, mode, cuda_only in BENCH_SETTINGS:
        if (cuda_only and not cuda) or (mode and not compile):
            continue
        if name == CPU_BF16_SETTING and (cuda or not cpu_has_fast_bf16()):
            continue
        t = time.perf_counter()
        try:
            model, opt, step_model, warm = _bench_model(device, arch, cl, mode)
            timed = functools.partial(
                _time_steps, step_model, opt, crit, device=device, amp=amp, channels_last=cl
            )
            w = [warm] + [1] * (rounds - 1)  # the first round also warms the model up
            runs = in_turns(  # the median of each is reported
                {
                    "model": lambda r, timed=timed, w=w: timed([(x, y)] * (n + w[r]), warmup=w[r]),
                    "full": lambda r, timed=timed: timed(
                        real_batches(n + warm_data), warmup=warm_data
                    ),
                },
                rounds,
            )
            rounds_m, rounds_f = runs["model"], runs["full"]
        except Exception as err:  # e.g. no compiler for torch.compile: report, go on
            print(f"  {name:44s} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
            continue
        model_only[name], full[name] = float(np.median(rounds_m)), float(np.median(rounds_f))
        ratio[name] = full[name] / model_only[name]
        spread = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(rounds_m, rounds_f))
        print(
            f"  {name:44s} {model_only[name]:10.1f} {full[name]:10.1f}  {100 * ratio[name]:4.0f}%"
            f"   ({time.perf_counter() - t:.0f} s with warm-up{', compilation' if mode else ''};"
            f" rounds {spread})"
        )
        if cuda and name == TRAIN_DEFAULT_SETTING:
            loader.prefetch = False
            inline = timed(real_batches(n + warm_data), warmup=warm_data)
            loader.prefetch = True
            print(
                f"  {'  same, no background preparation':44s} {'':10s} {inline:10.1f}  "
                f"{100 * inline / model_only[name]:4.0f}%"
            )
            out["inline"] = inline
        del model, opt, step_model, timed
        if cuda:
            torch.cuda.empty_cache()
    if cuda:
        out["loader_alone"] = throughput(loader, n, device, warmup=3)
        print(f"  {'loader alone (augmented on the GPU)':44s} {'':10s} {out['loader_alone']:10.1f}")
    best = max(model_only, key=model_only.get)
    print(
        f"best model-only setting: {best}; full pipeline there {100 * ratio[best]:.0f}% of it; "
        f"best full pipeline {max(full.values()):.1f} images/s"
    )
    return out | {
        "model_only": model_only,
        "full_pipeline": full,
        "ratio": ratio,
        "best": best,
        "device": str(device),
    }
