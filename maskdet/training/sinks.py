"""Where each epoch's metrics go: one dict per epoch, handed to every sink (timm style).

The training loop builds ONE flat dict of scalars per epoch (``train/loss``, ``val/auc``, ...)
plus an :class:`EpochExtras` with what is not a scalar (validation labels and probabilities for
the ROC and PR curves, a batch of augmented sample images). Every sink gets both:

- :class:`CSVSink`: ``RUN_DIR/metrics.csv`` and ``RUN_DIR/metrics.jsonl`` (the notebook plots these),
- :class:`TensorBoardSink`: ``RUN_DIR/tb`` (scalars under their dict keys, ``val/roc`` figure,
  ``val/pr`` curve, ``train/samples`` images, hyperparameters at the end),
- :class:`WandbSink`: the same dict, an ROC plot; online with an API key (``WANDB_API_KEY``,
  ``wandb login``, or Colab's Secrets), printing the run's URL; offline without one, printing
  the ``wandb sync`` command once; disabled in tests. It never prompts and never waits on a
  missing network.

Epochs are numbered from 1: a row's ``epoch`` and the TensorBoard and WandB steps alike.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import netrc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from ..core.system import can_reach
from .figures import roc_figure


@dataclass
class EpochExtras:
    """Non-scalar outputs: validation labels/probabilities, sample images (N,3,H,W, 0..1) and
    named figures (stage 05's, logged under their names)."""

    val_labels: np.ndarray | None = None
    val_probs: np.ndarray | None = None
    samples: torch.Tensor | None = None
    figures: dict = field(default_factory=dict)


class Sink:
    """Interface: ``log(step, metrics, extras)`` each epoch (or once for an evaluation), then
    ``close(hparams, final)`` once: with the run's hyperparameters and final metrics when it
    finished, without them when it stops early (a resumed run continues the same sink)."""

    def log(self, epoch: int, metrics: dict, extras: EpochExtras) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self, hparams: dict | None = None, final: dict | None = None) -> None:
        pass


class CSVSink(Sink):
    """``metrics.csv`` and ``metrics.jsonl`` in the run folder; on resume (``done``: the epochs
    finished before), rows of the epochs being redone are dropped first, so each epoch appears
    once."""

    def __init__(self, run_dir: str | os.PathLike, done: int = 0):
        self.csv = Path(run_dir) / "metrics.csv"
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        kept = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row.get("epoch", 0) <= done:
                        kept.append(row)
        self.rows: list[dict] = kept
        self._write()

    def _write(self) -> None:
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with open(self.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)

    def log(self, epoch: int, metrics: dict, extras: EpochExtras) -> None:
        self.rows.append(dict(metrics))
        self._write()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch metrics dicts of a run (from ``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _scalar_items(metrics: dict):
    for k, v in metrics.items():
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and k != "epoch"
        ):
            yield k, float(v)


class TensorBoardSink(Sink):
    """TensorBoard event files in ``RUN_DIR/tb``, one step per epoch (on resume, ``done``: the
    epochs finished before; ``purge_step`` drops the events of the epochs being redone)."""

    def __init__(self, run_dir: str | os.PathLike, done: int = 0):
        self.dir = Path(run_dir) / "tb"
        self.writer = SummaryWriter(str(self.dir), purge_step=done + 1 if done else None)

    def log(self, epoch: int, metrics: dict, extras: EpochExtras) -> None:
        for k, v in _scalar_items(metrics):
            self.writer.add_scalar(k, v, epoch)
        if extras.val_labels is not None and len(extras.val_labels):
            fig = roc_figure(extras.val_labels, extras.val_probs, f"val ROC, epoch {epoch}")
            self.writer.add_figure("val/roc", fig, epoch)
            plt.close(fig)
            self.writer.add_pr_curve(
                "val/pr",
                torch.as_tensor(extras.val_labels).int(),
                torch.as_tensor(extras.val_probs).float(),
                epoch,
            )
        if extras.samples is not None:
            self.writer.add_images("train/samples", extras.samples, epoch)
        for name, fig in extras.figures.items():
            self.writer.add_figure(name, fig, epoch, close=False)
        self.writer.flush()

    def close(self, hparams: dict | None = None, final: dict | None = None) -> None:
        if hparams is not None:
            hp = {
                k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in hparams.items()
            }
            self.writer.add_hparams(
                hp,
                {f"hparam/{k.replace('/', '_')}": v for k, v in _scalar_items(final or {})},
                run_name="hparams",
            )
        self.writer.close()


WANDB_MODES = ("auto", "online", "offline", "disabled")


def colab_secret(name: str) -> str | None:
    """The value of Colab's Secret ``name`` (the key icon in Colab's side bar), or None: off
    Colab, when the secret is not there, or when this notebook was not given access to it."""
    if "google.colab" not in sys.modules:
        return None
    try:
        from google.colab import userdata

        return userdata.get(name) or None
    except Exception:  # SecretNotFoundError, NotebookAccessError, an older Colab without it
        return None


def wandb_mode(requested: str = "auto") -> str:
    """``online`` with an API key (``WANDB_API_KEY``, Colab's Secret ``WANDB_API_KEY``, which is
    then put in the environment for wandb, or a netrc entry), else ``offline``;
    ``disabled``/``offline``/``online`` when asked for; ``WANDB_MODE`` overrides ``auto``;
    ``auto`` without the package installed is ``disabled``, with a notice."""
    if requested != "auto":
        return requested
    if importlib.util.find_spec("wandb") is None:
        print("NOTICE: wandb is not installed (pip install wandb): WandB logging is off.")
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    if not os.environ.get("WANDB_API_KEY") and (key := colab_secret("WANDB_API_KEY")):
        os.environ["WANDB_API_KEY"] = key
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        if os.path.exists(path) and netrc.netrc(path).authenticators("api.wandb.ai"):
            return "online"
    except (netrc.NetrcParseError, OSError):
        pass
    return "offline"


_SAID: set[str] = set()
"""Notices already printed by this process (one per run folder or run URL)."""


def _say_once(key: str | os.PathLike, text: str) -> None:
    """Print ``text`` unless this process already printed the notice for ``key``: a run's
    training and its evaluations share a WandB folder, and the sync command covers them all."""
    if str(key) not in _SAID:
        _SAID.add(str(key))
        print(text)


WANDB_PROBE_S = 3.0
"""Seconds given to reach the WandB server before an online run goes offline instead."""


def wandb_reachable(timeout: float = WANDB_PROBE_S) -> bool:
    """True when the WandB server (``WANDB_BASE_URL``, default api.wandb.ai) accepts a
    connection within ``timeout`` seconds (name lookup included: it runs in a thread)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    port = url.port or (80 if url.scheme == "http" else 443)
    return can_reach((url.hostname or "api.wandb.ai", port), timeout)


class WandbSink(Sink):
    """Weights & Biases: the same metrics dict each epoch, an ROC plot, the config.

    Runs are written under ``RUN_DIR/wandb``. Online mode falls back to offline, with one line,
    when the server cannot be reached within :data:`WANDB_PROBE_S` seconds or does not answer
    in time (``init_timeout``); it never asks for a key.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict,
        mode: str = "auto",
        project: str = "mask-detection",
        name: str | None = None,
        resume_id: str | None = None,
    ):
        self.mode = wandb_mode(mode)
        self.run = None
        if self.mode == "disabled":
            return
        run_dir = Path(run_dir)
        wandb_dir = run_dir / "wandb"
        if mode == "auto" and self.mode == "offline" and not os.environ.get("WANDB_MODE"):
            _say_once(
                wandb_dir,
                f"WandB: no API key (WANDB_API_KEY, `wandb login`, or Colab's Secrets), so it "
                f"logs offline to {wandb_dir}; upload later with "
                f"`wandb sync {wandb_dir}/offline-run-*`",
            )
        if self.mode == "online" and not wandb_reachable():
            _say_once(
                wandb_dir,
                "WandB: the server cannot be reached (no network?), so it logs offline to "
                f"{wandb_dir}; upload later with `wandb sync {wandb_dir}/offline-run-*`",
            )
            self.mode = "offline"
        import wandb  # heavy; only when this sink is on

        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=project,
            dir=str(run_dir),
            config=config,
            name=name or run_dir.name,
            id=resume_id,
            resume="allow" if resume_id else None,
            reinit="finish_previous",
            settings=wandb.Settings(
                init_timeout=30, silent=True, console="off", x_disable_stats=True
            ),
        )
        try:
            self.run = wandb.init(mode=self.mode, **kwargs)
        except Exception as err:  # online but unreachable or key rejected: keep the run offline
            if self.mode != "online":
                raise
            print(
                f"WandB online init failed ({str(err).splitlines()[0][:120]}); logging offline "
                f"to {wandb_dir} instead; upload later with `wandb sync {wandb_dir}/offline-run-*`"
            )
            self.mode = "offline"
            self.run = wandb.init(mode="offline", **kwargs)
        if self.mode == "online":
            _say_once(self.run.url, f"WandB online: {self.run.url}")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, epoch: int, metrics: dict, extras: EpochExtras) -> None:
        if self.run is None:
            return
        import wandb  # heavy; only when this sink is on

        data = dict(_scalar_items(metrics))
        data["epoch"] = epoch
        if extras.val_labels is not None and len(np.unique(extras.val_labels)) == 2:
            probs = np.asarray(extras.val_probs)
            data["val/roc_curve"] = wandb.plot.roc_curve(
                np.asarray(extras.val_labels).astype(int),
                np.stack([1 - probs, probs], 1),
                labels=["not_wearing_mask", "wearing_mask"],
                classes_to_plot=[1],
            )
            fig = roc_figure(extras.val_labels, probs, f"val ROC, epoch {epoch}")
            data["val/roc"] = wandb.Image(fig)
            plt.close(fig)
        if extras.samples is not None:
            data["train/samples"] = [
                wandb.Image(img.permute(1, 2, 0).numpy()) for img in extras.samples[:16]
            ]
        data |= {name: wandb.Image(fig) for name, fig in extras.figures.items()}
        self.run.log(data, step=epoch)

    def close(self, hparams: dict | None = None, final: dict | None = None) -> None:
        if self.run is None:
            return
        if final:
            self.run.summary.update(dict(_scalar_items(final)))
        self.run.finish()
