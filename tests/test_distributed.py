"""torchrun / DistributedDataParallel training on real faces (lfw-mini, stages 01-02 for real):
real processes, a real gloo process group, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskdet.core.checkpoint import checkpoint_meta, load_checkpoint, load_model, save_checkpoint
from maskdet.core.model import build_model
from maskdet.loading.distributed import DistEnv, shard_bounds
from maskdet.loading.loader import make_loaders
from maskdet.training.config import TrainConfig
from maskdet.training.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    arch="resnet18",
    pretrained=False,
    batch_size=8,
    limit=16,
    val_limit=8,
    workers=0,
    wandb="disabled",
    tensorboard=False,
    warmup_epochs=0.0,
    test_preds=False,
)
"""Two steps of 8 images per epoch: a ResNet-18 from random init on lfw-mini."""


def _args(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            out += [flag, str(v)]
    return out


def _torchrun(nproc: int, cfg: dict, **popen) -> subprocess.Popen:
    """``torchrun --nproc_per_node nproc -m maskdet train ...`` (the module form of torchrun,
    so that the venv's torch runs it), one CPU thread per rank on this small machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(29400 + os.getpid() % 500)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASKDET_CV2_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd + ["-m", "maskdet", "train", *_args(cfg)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def test_shards_cover_every_image_once():
    for n in (1, 2, 7, 64):
        for world in (1, 2, 3, 8):
            parts = [shard_bounds(n, DistEnv(r, world, r, "gloo")) for r in range(world)]
            got = [i for p in parts for i in range(n)[p]]
            assert got == list(range(n)), (n, world)
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_parts_make_the_single_process_batches(masked_mini, world):
    """The cached loader under ``world`` ranks: each rank's parts put together, epoch after
    epoch, are the single process's batches: the same images, augmented the same way."""
    kw = dict(batch_size=8, mode="cached", workers=0, limit=20, val_limit=6, seed=3)
    single = make_loaders(masked_mini, **kw)
    ranks = [
        make_loaders(masked_mini, **kw, dist=DistEnv(r, world, r, "gloo")) for r in range(world)
    ]
    for split in ("train", "val"):
        for epoch in (0, 1):
            for ld in [single[split]] + [r[split] for r in ranks]:
                ld.set_epoch(epoch)
            parts = [list(r[split]) for r in ranks]
            whole = list(single[split])
            assert len(whole) >= (2 if split == "train" else 1)
            steps = {len(p) for p in parts}
            assert split == "val" or len(steps) == 1  # every rank takes part in every step
            if split == "train" and steps != {len(whole)}:  # only a last batch too small
                assert steps == {len(whole) - 1} and len(whole[-1].labels) < 2 * world
                whole = whole[:-1]  # to give each rank 2 images (BatchNorm) is dropped
            for k, batch in enumerate(whole):
                mine = [p[k] for p in parts if k < len(p)]
                assert torch.equal(torch.cat([b.indices for b in mine]), batch.indices)
                assert torch.equal(torch.cat([b.labels for b in mine]), batch.labels)
                assert torch.equal(torch.cat([b.images for b in mine]), batch.images), (split, k)
                if split == "train":
                    assert all(b.total == len(batch.labels) for b in mine)


def test_checkpoint_of_a_wrapped_model_loads_in_a_plain_one(tmp_path):
    """A state dict saved from a DDP (``module.``) or compiled (``_orig_mod.``) wrapper loads
    into the plain model; this project's own checkpoints have plain names either way."""
    torch.manual_seed(0)
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    for prefix in ("module.", "_orig_mod."):
        state = {prefix + k: v for k, v in model.state_dict().items()}
        meta = checkpoint_meta("resnet18", 0.5, {})
        save_checkpoint(tmp_path / "w.pt", meta | {"model": state})
        loaded, _ = load_model(tmp_path / "w.pt")
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (prefix, k)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_two_ranks_train_as_one_process(masked_mini, tmp_path):
    """The issue's goal: gloo, 2 ranks against 1 process, same data and seed, SyncBatchNorm:
    after 2 steps the weights are equal within float tolerance, and the 2-rank checkpoint
    (plain names) loads in a single process."""
    cfg = TINY | dict(data=str(masked_mini), epochs=1, seed=1)
    train(TrainConfig(**cfg, out=str(tmp_path / "one")))
    proc = _torchrun(2, cfg | dict(out=str(tmp_path / "two"), sync_bn=True))
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert "2 ranks (gloo), sync_bn True" in log
    assert log.count("epoch   1/1 ") == 1, log[-3000:]  # rank 0 alone prints and writes
    assert log.count('"epochs_done"') == 1, log[-3000:]  # and reports the summary

    one, two = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    assert set(one) == set(two) and not any(k.startswith("module.") for k in two)
    # Float tolerance, measured against the update the 2 steps made: in float32 the CPU's
    # BatchNorm backward is itself about 1% off the float64 gradient in conv1 (the same
    # comparison in float64 agrees to 1e-14), and that noise grows with depth and momentum.
    start = _init_weights(cfg["seed"])
    step_one = torch.cat([(one[k] - start[k]).flatten().double() for k in one])
    step_two = torch.cat([(two[k] - start[k]).flatten().double() for k in one])
    gap = float((step_two - step_one).norm() / step_one.norm())
    print(f"2 ranks vs 1 process after 2 steps: |difference| / |update| = {gap:.2e}")
    assert step_one.norm() > 0 and gap < 0.01, gap
    for k, v in one.items():  # and tensor by tensor
        if not v.is_floating_point():  # BatchNorm's batch counters
            assert torch.equal(two[k], v), k
            continue
        moved = (v - start[k]).double().norm()
        assert (two[k] - v).double().norm() <= 0.25 * moved, (k, float(moved))
    metrics = [l for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines() if l]
    assert len(metrics) == 1
    load_model(tmp_path / "two" / "last.pt")  # a DDP run's checkpoint, in one process


def _init_weights(seed: int) -> dict[str, torch.Tensor]:
    """The random-init weights of the tiny run (seeded as train seeds them)."""
    torch.manual_seed(seed)
    return build_model("resnet18", pretrained=False, verbose=False)[0].state_dict()


@pytest.mark.slow
def test_a_dying_rank_ends_the_job_and_a_rerun_resumes(masked_mini, tmp_path):
    """Rank 1 killed (SIGKILL) after an epoch: torchrun ends the job, rank 0 says why and how
    to resume, nothing hangs; the same command resumes from last.pt, then once more in a single
    process (a DDP checkpoint resumes without torchrun)."""
    out = tmp_path / "run"
    cfg = TINY | dict(data=str(masked_mini), out=str(out), epochs=40, limit=8, val_limit=4)
    proc = _torchrun(2, cfg, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        ranks = _rank_pids(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        log, _ = proc.communicate(timeout=120)  # no hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "rerun the same command to resume" in log, log[-3000:]
    done = load_checkpoint(out / "last.pt")["epoch"]  # epochs numbered from 1: the epochs done
    assert 1 <= done < cfg["epochs"]

    again = cfg | dict(stop_after=1)  # the same command, one epoch per session here
    proc = _torchrun(2, again)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert f"resuming {out} at epoch {done + 1}" in log
    assert load_checkpoint(out / "last.pt")["epoch"] == done + 1
    summary = train(TrainConfig(**again))  # a DDP checkpoint resumes in a single process
    assert summary["epochs_done"] == done + 2 and summary["ranks"] == 1
    assert load_checkpoint(out / "last.pt")["epoch"] == done + 2


def _rank_pids(agent: int) -> list[int]:
    """The worker processes (ranks, in rank order) that the torchrun agent ``agent`` started."""
    kids = subprocess.run(["pgrep", "-P", str(agent)], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, kids.split()):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [e for e in env if e.startswith(b"RANK=")]
        if rank:
            pids.append((int(rank[0][5:]), pid))
    return [p for _, p in sorted(pids)]


def test_rank_count_that_leaves_a_rank_without_two_images_is_refused(masked_mini):
    with pytest.raises(ValueError, match="fewer than 2 images"):
        make_loaders(masked_mini, 6, "cached", workers=0, limit=8, dist=DistEnv(0, 4, 0, "gloo"))
    with pytest.raises(ValueError, match="--loader cached"):
        make_loaders(masked_mini, 8, "dataloader", workers=0, dist=DistEnv(0, 2, 0, "gloo"))


@pytest.mark.slow
def test_bench_ddp_times_a_plain_process_against_torchrun(masked_mini, capsys):
    """``bench train --ddp`` on the CPU (gloo): both sides really train (images/s > 0) and the
    all-reduce size is the model's float32 gradients."""
    from maskdet.bench.train import bench_train

    r = bench_train(
        data=str(masked_mini), arch="resnet18", batch_size=8, batches=1, rounds=1, ddp=True
    )
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    assert r["grad_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert r["plain"] > 0 and r["ddp"] > 0 and r["nproc"] == 1
    out = capsys.readouterr().out
    assert "torchrun, 1 rank(s)" in out and "load average" in out
