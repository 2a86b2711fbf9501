"""``python -m maskdet bench train --ddp``: the training step's images/s in one plain process
against the same step under ``torchrun --nproc_per_node N`` (DistributedDataParallel), in turns.

Both sides are fresh processes that run this module (the plain one without torchrun, so without
a process group), each timing the steps of ``train`` after warm-up: cached loader, augmentation,
forward, backward (with DDP's gradient all-reduce), SGD. With N = 1 the difference is DDP's own
overhead; with N > 1 it is the scaling at a fixed global batch. The parent passes the settings
in one environment variable (:data:`SETTINGS_VAR`) and reads one JSON file back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..core.model import build_model
from ..core.system import autocast
from ..loading.distributed import init_distributed, shutdown, wrap_ddp
from ..loading.loader import make_loaders
from .common import masked_data

SETTINGS_VAR = "MASKDET_BENCH_DDP"
"""The worker's settings (JSON), set by :func:`bench_ddp`."""


def step_rate(
    data: str,
    out: str,
    arch: str,
    batch_size: int,
    batches: int,
    warmup: int,
    device: str | None,
    threads: int,
) -> dict:
    """Train ``warmup + batches`` steps of global batch ``batch_size`` as ``train`` does (on
    CUDA: channels_last + AMP) and, on rank 0, write the global images/s to ``out``."""
    torch.set_num_threads(threads)
    env, dev = init_distributed(device or "auto")
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model, _ = build_model(arch, pretrained=False, verbose=False)
    model.to(dev).train()
    if cuda:
        model.to(memory_format=torch.channels_last)
    step_model = wrap_ddp(model, env, dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loaders(
        data, batch_size, "cached", "default", 0, dev, splits=("train",), dist=env
    )
    loader = loader["train"]
    done, t0, epoch = 0, time.perf_counter(), 0
    while done < warmup + batches:
        loader.set_epoch(epoch)
        for b in loader:
            if b.total != batch_size:
                continue  # a last partial batch
            if done == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x = b.images.contiguous(memory_format=torch.channels_last) if cuda else b.images
            with autocast(dev, cuda):
                logits = step_model(x).squeeze(1).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, b.labels.float(), reduction="sum"
            ) * (env.world_size / b.total)  # as train scales it: DDP averages the ranks
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + batches:
                break
        epoch += 1
    if cuda:
        torch.cuda.synchronize()
    result = {
        "images_per_s": batches * batch_size / (time.perf_counter() - t0),
        "ranks": env.world_size,
        "backend": env.backend or "none",
        "device": str(dev),
        "grad_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }
    if env.is_main:
        Path(out).write_text(json.dumps(result))
    shutdown(env)
    return result


def _launch(settings: dict, nproc: int | None) -> dict:
    """One worker run: a plain process (``nproc`` None) or ``torchrun --nproc_per_node nproc``."""
    cmd = [sys.executable, "-m"]
    if nproc is not None:
        cmd += ["torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m"]
    env = os.environ | {SETTINGS_VAR: json.dumps(settings)}
    proc = subprocess.run(cmd + [__name__], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"bench worker failed ({' '.join(cmd[2:5])}): {' | '.join(tail)}")
    return json.loads(Path(settings["out"]).read_text())


def bench_ddp(
    data: str | None = None,
    source: str | None = None,
    images: int = 200,
    device: str | None = None,
    arch: str = "resnet50",
    batches: int | None = None,
    rounds: int | None = None,
    batch_size: int = 64,
    nproc: int = 1,
) -> dict:
    """Global images/s of the training step: one plain process against ``torchrun
    --nproc_per_node nproc``, ``rounds`` times in turns (median), and the bytes DDP all-reduces
    per step. On CPUs every rank gets an equal share of the torch threads."""
    cuda = torch.cuda.is_available() and device in (None, "auto", "cuda")
    n = batches or (100 if cuda else 3)
    rounds = rounds or 3
    threads = max(1, torch.get_num_threads() // (1 if cuda else nproc))
    data_dir = str(masked_data(data, source, images))
    load = os.getloadavg()
    print(
        f"bench train --ddp: {arch}, global batch {batch_size}, {n} timed steps after 2, "
        f"{rounds} rounds in turns; plain process vs torchrun --nproc_per_node {nproc} "
        f"({'NCCL' if cuda else 'gloo'}); {threads} torch threads per rank; "
        f"load average {load[0]:.1f} of {os.cpu_count()} cores"
    )
    results: dict[str, list[float]] = {"plain": [], "ddp": []}
    grad_bytes = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, np_ in (("plain", None), ("ddp", nproc)):
                settings = dict(
                    data=data_dir,
                    out=str(Path(tmp) / f"{name}{r}.json"),
                    arch=arch,
                    batch_size=batch_size,
                    batches=n,
                    warmup=2,
                    device=device,
                    threads=threads if np_ else threads * (1 if cuda else nproc),
                )
                res = _launch(settings, np_)
                results[name].append(res["images_per_s"])
                grad_bytes = res["grad_bytes"]
    plain, ddp = (float(np.median(results[k])) for k in ("plain", "ddp"))
    for name, label in (("plain", "1 process, no DDP"), ("ddp", f"torchrun, {nproc} rank(s)")):
        spread = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"  {label:28s} {float(np.median(results[name])):9.1f} images/s  (rounds {spread})")
    print(
        f"  DDP/plain {100 * ddp / plain:.1f}%; all-reduce per step {grad_bytes / 1e6:.1f} MB of "
        f"gradients; load average after {os.getloadavg()[0]:.1f}"
    )
    return {"plain": plain, "ddp": ddp, "ratio": ddp / plain, "rounds": results} | {
        "nproc": nproc,
        "grad_bytes": grad_bytes,
        "load_before": load[0],
        "load_after": os.getloadavg()[0],
    }


if __name__ == "__main__":  # a worker started by bench_ddp (plain or under torchrun)
    step_rate(**json.loads(os.environ[SETTINGS_VAR]))
