"""A real, briefly trained run shared by the stage 05/06 tests (import the fixture by name)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, masked_mini) -> Path:
    """One epoch of a ResNet-18 from random init on the masked lfw-mini subset: a real checkpoint,
    per-epoch val predictions and TensorBoard events (no mocks)."""
    from maskdet.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "tiny"
    train(
        TrainConfig(
            data=str(masked_mini),
            out=str(out),
            epochs=2,
            batch_size=16,
            arch="resnet18",
            pretrained=False,
            limit=48,
            val_limit=24,
            workers=0,
            wandb="disabled",
            tensorboard=True,
            warmup_epochs=0.0,
            test_preds=False,
        )
    )
    assert (out / "best.pt").exists()
    return out
