"""WandB and TensorBoard as a student sees them (issue 17): WandB online with a key, Colab's
Secrets included, offline without one with the sync command printed once; TensorBoard's scalars
read back from real event files and plotted. Colab's ``google.colab.userdata`` is stood in by a
small module (this machine is not Colab); wandb and TensorBoard are the real packages."""

from __future__ import annotations

import sys
import types

import pytest
from torch.utils.tensorboard import SummaryWriter

from maskdet.training import sinks, tbread


def _colab(monkeypatch, get) -> None:
    """Make ``google.colab.userdata.get`` answer with ``get`` for this test."""
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = get
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in (
        ("google", google),
        ("google.colab", colab),
        (userdata.__name__, userdata),
    ):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_a_colab_secret_makes_wandb_online(no_key, monkeypatch):
    import os

    _colab(monkeypatch, lambda name: "k" * 40 if name == "WANDB_API_KEY" else None)
    assert sinks.wandb_mode("auto") == "online"
    assert os.environ["WANDB_API_KEY"] == "k" * 40  # handed to wandb through its variable


def test_without_a_key_or_secret_access_wandb_is_offline(no_key, monkeypatch):
    class NotebookAccessError(Exception):
        pass

    def refuse(name):
        raise NotebookAccessError(name)

    _colab(monkeypatch, refuse)
    assert sinks.wandb_mode("auto") == "offline"
    monkeypatch.delitem(sys.modules, "google.colab")
    assert sinks.colab_secret("WANDB_API_KEY") is None  # off Colab: not looked for at all
    assert sinks.wandb_mode("disabled") == "disabled"


@pytest.mark.slow
def test_offline_sync_command_is_printed_once_per_run_folder(no_key, tmp_path, capsys):
    run = tmp_path / "run"
    for name in ("train", "eval-test", "eval-real"):  # a run's training and its evaluations
        sink = sinks.WandbSink(run, {"arch": "resnet18"}, "auto", name=name)
        assert sink.mode == "offline"
        sink.close()
    notices = [line for line in capsys.readouterr().out.splitlines() if "wandb sync" in line]
    assert notices == [
        f"WandB: no API key (WANDB_API_KEY, `wandb login`, or Colab's Secrets), so it logs "
        f"offline to {run / 'wandb'}; upload later with `wandb sync {run / 'wandb'}/offline-run-*`"
    ]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 3


def test_tensorboard_scalars_are_read_back_and_plotted(tmp_path, capsys):
    writer = SummaryWriter(str(tmp_path / "tb"))
    for epoch, (loss, auc) in enumerate([(0.7, 0.6), (0.5, 0.8), (0.3, 0.9)], start=1):
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("val/auc", auc, epoch)
    writer.close()
    scalars = tbread.read_scalars(tmp_path / "tb")
    assert scalars["train/loss"] == [(1, pytest.approx(0.7)), (2, 0.5), (3, pytest.approx(0.3))]
    assert [step for step, _ in scalars["val/auc"]] == [1, 2, 3]
    fig = tbread.scalars_figure(tmp_path / "tb")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy and ROC AUC"]  # no lr logged, so no lr panel
    assert [line.get_label() for line in fig.axes[1].lines] == ["val/auc"]
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3]  # whole epochs, numbered from 1

    assert tbread.scalars_figure(tmp_path / "nothing") is None
    assert capsys.readouterr().out.count("\n") == 1  # one line saying why
