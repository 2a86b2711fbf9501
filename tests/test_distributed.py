"""torchrun / DistributedDataParallel training on real faces (lfw-mini, stages 01-02 for real):
real processes, a real gloo process group, no mocks."""

from __future__ import annotations

import pytest
import torch

from maskdet.checkpoint import checkpoint_meta, load_model, save_checkpoint
from maskdet.distributed import DistEnv, shard_bounds
from maskdet.loader import make_loaders
from maskdet.model import build_model


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


def test_rank_count_that_leaves_a_rank_without_two_images_is_refused(masked_mini):
    with pytest.raises(ValueError, match="fewer than 2 images"):
        make_loaders(masked_mini, 6, "cached", workers=0, limit=8, dist=DistEnv(0, 4, 0, "gloo"))
    with pytest.raises(ValueError, match="--loader cached"):
        make_loaders(masked_mini, 8, "dataloader", workers=0, dist=DistEnv(0, 2, 0, "gloo"))
