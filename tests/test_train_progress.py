"""What a student sees while stage 04 runs (issue 12 A): a step bar with the running loss and
images/s, an estimate of the run's time from a short timed warm-up before it, and one line
when WandB logs offline for want of a key. Real faces (lfw-mini, stages 01-02), a real
ResNet-18, no mocks."""

from __future__ import annotations

import math

import pytest

from maskdet.training.config import TrainConfig
from maskdet.training.estimate import estimate_training_time
from maskdet.training.train import train


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        arch="resnet18",
        epochs=2,
        batch_size=4,
        limit=16,
        val_limit=8,
        pretrained=False,
        wandb="disabled",
        workers=0,
        warmup_epochs=0.5,
        tensorboard=False,
        test_preds=False,
    )
    return TrainConfig(**(base | kw))


def test_the_estimate_comes_from_timed_steps_and_counts_what_is_left(masked_mini, tmp_path, capsys):
    cfg = _cfg(masked_mini, tmp_path / "run")
    est = estimate_training_time(cfg, steps=2, warmup=1)
    out = capsys.readouterr().out
    assert "estimate: 2 epochs x 4 steps" in out and "timed steps after 1 warm-up" in out
    assert est["steps_per_epoch"] == 4 and est["step_s"] > 0
    assert est["total_s"] == pytest.approx(est["epoch_s"] * 2)
    assert not (tmp_path / "run" / "last.pt").exists()  # the warm-up trains a throw-away model
    few = estimate_training_time(_cfg(masked_mini, tmp_path / "run", limit=8), steps=6, warmup=2)
    assert few["steps_per_epoch"] == 2 and few["step_s"] > 0  # 2 batches: 1 warm-up, 1 timed
    assert "from 1 timed steps after 1 warm-up" in capsys.readouterr().out


@pytest.mark.slow
def test_steps_show_loss_and_speed_and_wandb_says_it_logs_offline(
    masked_mini, tmp_path, capsys, monkeypatch
):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr("maskdet.training.train.PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(
        "maskdet.core.progress.NOTEBOOK_REDRAW_S", 0.0
    )  # every frame, not 1 a second
    run = tmp_path / "run"
    summary = train(_cfg(masked_mini, run, epochs=1, wandb="auto"))
    out, err = capsys.readouterr()
    assert summary["finished"]
    assert (
        "epoch 1/1" in err
        and "epoch 0/" not in err
        and "loss=" in err
        and "img_s=" in err
        and "4/4" in err
    )
    notice = [line for line in out.splitlines() if line.startswith("WandB:")]
    assert len(notice) == 1 and "logs offline to" in notice[0] and str(run / "wandb") in notice[0]
    est = estimate_training_time(_cfg(masked_mini, run, epochs=3), steps=1, warmup=0)
    assert est["epochs"] == 2  # the finished epoch is not counted again
    capsys.readouterr()
    done = estimate_training_time(_cfg(masked_mini, run, epochs=1), steps=1, warmup=0)
    assert done["epochs"] == 0 and done["total_s"] == 0
    assert "nothing left to train" in capsys.readouterr().out


def test_a_split_shorter_than_the_warm_up_still_gives_a_finite_estimate(
    masked_mini, tmp_path, capsys
):
    cfg = _cfg(masked_mini, tmp_path / "run", limit=8, val_limit=4)
    est = estimate_training_time(cfg)  # default: 2 warm-up + 6 timed steps, more than the split
    out = capsys.readouterr().out
    assert est["steps_per_epoch"] < 8
    assert math.isfinite(est["step_s"]) and est["step_s"] > 0
    assert math.isfinite(est["total_s"]) and est["total_s"] > 0
    assert "nan" not in out and "unknown" not in out
    assert "estimate: 2 epochs" in out
