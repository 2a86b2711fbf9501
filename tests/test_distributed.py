"""torchrun / DistributedDataParallel training on real faces (lfw-mini, stages 01-02 for real):
real processes, a real gloo process group, no mocks."""

from __future__ import annotations

import torch

from maskdet.checkpoint import checkpoint_meta, load_model, save_checkpoint
from maskdet.model import build_model


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
