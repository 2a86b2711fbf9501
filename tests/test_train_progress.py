"""What a student sees while stage 04 runs (issue 12 A): a step bar with the running loss and
images/s, an estimate of the run's time from a short timed warm-up before it, and one line
when WandB logs offline for want of a key. Real faces (lfw-mini, stages 01-02), a real
ResNet-18, no mocks."""

from __future__ import annotations

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


@pytest.mark.slow
def test_steps_show_loss_and_speed_and_wandb_says_it_logs_offline(
    masked_mini, tmp_path, capsys, monkeypatch
):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr("maskdet.train.PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr("maskdet.progress.NOTEBOOK_REDRAW_S", 0.0)  # every frame, not 1 a second
    run = tmp_path / "run"
    summary = train(_cfg(masked_mini, run, epochs=1, wandb="auto"))
    out, err = capsys.readouterr()
    assert summary["finished"]
    assert "epoch 0/0" in err and "loss=" in err and "img_s=" in err and "4/4" in err
    notice = [line for line in out.splitlines() if line.startswith("WandB:")]
    assert len(notice) == 1 and "logs offline to" in notice[0] and str(run / "wandb") in notice[0]
    est = estimate_training_time(_cfg(masked_mini, run, epochs=3), steps=1, warmup=0)
    assert est["epochs"] == 2  # the finished epoch is not counted again
