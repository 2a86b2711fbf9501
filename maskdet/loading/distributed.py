"""Several processes, one training run: ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m maskdet train ...`` starts N processes (ranks); each calls
:func:`init_distributed`, which reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) and joins one process group: NCCL on GPUs (rank ``r`` of a node on
``cuda:LOCAL_RANK``), gloo on CPUs. Without torchrun nothing changes: one process, no group.

What the ranks share, and how:

- the data: each rank takes its contiguous part (:func:`shard_bounds`) of every global batch
  of the cached loader, whose order and augmentation draws do not depend on the rank count;
- the gradients: DDP averages them; the training loss is scaled so that the average equals the
  gradient of the global batch's mean loss, whatever the parts' sizes;
- BatchNorm, optionally (``--sync-bn``): statistics over the global batch, with
  ``torch.nn.SyncBatchNorm`` on GPUs and :class:`GlobalBatchNorm2d` on CPUs (torch's runs on
  GPUs only); state dicts keep BatchNorm's keys, so checkpoints stay portable;
- everything else goes through the rank 0 process: files, sinks, printing.

A rank that dies (or is stopped by torchrun after another rank died) raises
:class:`RankFailure`; the training loop turns it into one clear message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn import functional as F

from ..core.system import resolve_device

SHARED_TOKEN = ".ranks-token"
"""Written by rank 0 into RUN_DIR and read by every rank (:func:`check_shared_dir`)."""
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""Environment variables torchrun sets in each process it starts."""
SETUP_TIMEOUT_S = 4 * 3600.0
"""How long the other ranks wait for the first rank of their machine to build the image cache
(:func:`local_rank_first`): decoding 200k CelebA faces takes far longer than a collective may."""
_SETUP_GROUP: list = []  # the gloo group of local_rank_first, made by init_distributed


class RankFailure(RuntimeError):
    """This rank cannot go on: another rank died, or a collective failed or timed out."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a run: its rank among ``world_size`` processes.

    ``backend`` is empty for a plain single-process run (no process group); under torchrun
    it is ``nccl`` or ``gloo``, also with one process (``--nproc_per_node 1``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True under torchrun (a process group exists, the model is wrapped in DDP)."""
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs to the sinks and prints."""
        return self.rank == 0

    def describe(self) -> str:
        if not self.enabled:
            return "1 process"
        return f"rank {self.rank} of {self.world_size} ({self.backend})"


SINGLE = DistEnv()


def launched_by_torchrun() -> bool:
    """True when torchrun (or a launcher setting the same variables) started this process."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def _device_for(requested: str, local_rank: int) -> torch.device:
    """The device of a rank: GPU ``local_rank`` when the run uses CUDA, else the CPU."""
    device = resolve_device(requested)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise RankFailure(
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
            "start at most one process per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(
    requested_device: str = "auto", timeout_s: float = 600.0
) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group (once per process) and pick this rank's device; without
    torchrun: ``(SINGLE, the requested device)``. ``timeout_s`` bounds every collective, so a
    rank that stops answering ends the job instead of hanging it."""
    if not launched_by_torchrun():
        return SINGLE, resolve_device(requested_device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device_for(requested_device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend,
            timeout=timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
        _SETUP_GROUP[:] = [
            dist.new_group(
                backend="gloo", timeout=timedelta(seconds=max(timeout_s, SETUP_TIMEOUT_S))
            )
        ]
    return DistEnv(rank, world, local_rank, dist.get_backend()), device


LOST_PEER_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer")
"""Words of the errors a collective raises when another rank has gone (gloo raises a plain
RuntimeError: "Connection reset by peer")."""


def lost_another_rank(err: BaseException) -> bool:
    """True when ``err`` says that another rank died or stopped answering (not a bug here)."""
    if isinstance(err, (RankFailure, dist.DistError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(w in text for w in LOST_PEER_WORDS)


@contextlib.contextmanager
def lost_rank_ends_job(env: DistEnv, last: Path) -> Iterator[None]:
    """Turn a lost rank (:func:`lost_another_rank`) into one message saying how to resume from
    ``last`` (exit status 1); any other error, and every error of a single process, as is."""
    try:
        yield
    except RuntimeError as err:
        if not (env.enabled and lost_another_rank(err)):
            raise
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err)
        raise SystemExit(
            f"maskdet train: {env.describe()} stopped: another rank failed or stopped "
            f"answering ({reason}). {last} keeps the last finished epoch: rerun the same "
            "command to resume."
        ) from None


def _stopped_by_launcher(signum: int, frame) -> None:
    """torchrun sends SIGTERM to the other ranks when one fails: say so, do not just vanish."""
    raise RankFailure("stopped by torchrun (SIGTERM), which does so when another rank fails")


def shutdown(env: DistEnv) -> None:
    """Leave the process group at the end of a run (all ranks wait for each other first)."""
    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _SETUP_GROUP.clear()


def shard_bounds(n: int, env: DistEnv) -> slice:
    """This rank's contiguous part of a global batch of ``n`` images (sizes differ by at most
    one; rank order = batch order, so the parts put together are the global batch)."""
    return slice(n * env.rank // env.world_size, n * (env.rank + 1) // env.world_size)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


@contextlib.contextmanager
def local_rank_first(env: DistEnv) -> Iterator[None]:
    """Local rank 0 of each machine runs the block first (e.g. builds the image cache or
    downloads weights), the other ranks after it, so that they reuse what it wrote. They wait
    up to :data:`SETUP_TIMEOUT_S` (a CPU barrier of its own), not the collectives' timeout."""
    group = _SETUP_GROUP[0] if _SETUP_GROUP else None
    if env.enabled and env.local_rank != 0:
        dist.barrier(group=group)
    yield
    if env.enabled and env.local_rank == 0:
        dist.barrier(group=group)


def all_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """``values`` summed over the ranks (unchanged in a single process)."""
    if env.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj: object, env: DistEnv) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not env.enabled:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def check_agree(value: object, env: DistEnv, what: str) -> None:
    """Raise on every rank when the ranks see different ``value``s (e.g. a RUN_DIR that some
    machines do not share)."""
    seen = gather_objects(value, env)
    if any(v != seen[0] for v in seen):
        raise RankFailure(f"the ranks disagree on {what}: {seen}")


def check_shared_dir(path: Path, env: DistEnv) -> None:
    """Raise on every rank unless all of them see the folder rank 0 made at ``path`` (on
    several machines: a shared file system), where rank 0 alone writes."""
    if not env.enabled:
        return
    token = uuid.uuid4().hex if env.is_main else ""
    if env.is_main:
        (path / SHARED_TOKEN).write_text(token)
    token = gather_objects(token, env)[0]
    try:
        seen = (path / SHARED_TOKEN).read_text() == token
    except OSError:
        seen = False
    blind = [r for r, ok in enumerate(gather_objects(seen, env)) if not ok]
    if blind:
        raise RankFailure(
            f"ranks {blind} do not see {path} as rank 0 wrote it: on several machines RUN_DIR "
            "must be on a file system that all of them share"
        )


def wrap_ddp(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun (rank 0's weights are broadcast to
    every rank here); the model itself in a single process."""
    if not env.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


# ----------------------------------------------------------------------- BatchNorm


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across the ranks,
    for CPUs (``torch.nn.SyncBatchNorm`` runs on GPUs only).

    Each rank's mean and variance are combined with their counts in float64 by one
    differentiable all-reduce (its backward sums the gradients over the ranks, which is what
    the global batch's statistics ask for). The running statistics are updated as BatchNorm2d
    does with the global batch (unbiased variance). In eval mode, or without a process group,
    it is BatchNorm2d; its state dict is BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        n = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        local = torch.cat([n * mean.double(), n * (var.double() + mean.double() ** 2), n])
        total = dist_fn.all_reduce(local, op=dist.ReduceOp.SUM)
        c = x.shape[1]
        count = total[-1]
        g_mean = total[:c] / count
        g_var = (total[c : 2 * c] / count - g_mean**2).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = g_var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(g_mean.to(x.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
        shape = (1, c, 1, 1)
        inv = torch.rsqrt(g_var.to(x.dtype) + self.eps)
        y = (x - g_mean.to(x.dtype).view(shape)) * inv.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a :class:`GlobalBatchNorm2d` holding the
    same parameters and buffers."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _global_batchnorm(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch: ``torch.nn.SyncBatchNorm`` on GPUs,
    :class:`GlobalBatchNorm2d` elsewhere. Call before building the optimizer (the layers are
    new modules around the same parameters)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _global_batchnorm(model)


def uses_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def batch_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The summed BCE loss of a rank's images (its share of the global batch's loss)."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
