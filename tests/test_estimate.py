"""Chapter 04's time estimate is a real number or says why there is none: a short training split
(fewer batches than the default warm-up and timed steps, as in the smoke preset) still gives a
finite estimate, and a finished run says there is nothing left to train. Real faces (lfw-mini,
stages 01-02), a real ResNet-18, no mocks."""

from __future__ import annotations

import math

import pytest

from maskdet.config import TrainConfig
from maskdet.estimate import estimate_training_time
from maskdet.train import train


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        arch="resnet18",
        epochs=2,
        batch_size=4,
        limit=8,
        val_limit=4,
        pretrained=False,
        wandb="disabled",
        workers=0,
        warmup_epochs=0.5,
        tensorboard=False,
        test_preds=False,
    )
    return TrainConfig(**(base | kw))


def test_a_split_shorter_than_the_warm_up_still_gives_a_finite_estimate(
    masked_mini, tmp_path, capsys
):
    cfg = _cfg(masked_mini, tmp_path / "run")
    est = estimate_training_time(cfg)  # default: 2 warm-up + 6 timed steps, more than the split
    out = capsys.readouterr().out
    assert est["steps_per_epoch"] < 8
    assert math.isfinite(est["step_s"]) and est["step_s"] > 0
    assert math.isfinite(est["total_s"]) and est["total_s"] > 0
    assert "nan" not in out and "unknown" not in out
    assert "estimate: 2 epochs" in out


@pytest.mark.slow
def test_a_finished_run_has_nothing_left_to_estimate(masked_mini, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(masked_mini, run, epochs=1))
    capsys.readouterr()
    est = estimate_training_time(_cfg(masked_mini, run, epochs=1))
    out = capsys.readouterr().out
    assert est["epochs"] == 0 and est["total_s"] == 0
    assert "nothing left to train" in out and "nan" not in out
