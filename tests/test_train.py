"""Stage 04 training on real faces (lfw-mini, stages 01-02 for real): no mocks of torch or data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from maskdet.bench.train import bench_train
from maskdet.core.checkpoint import load_checkpoint, load_model
from maskdet.core.manifest import read_manifest, select_rows
from maskdet.core.model import build_model
from maskdet.loading.loader import make_loaders
from maskdet.training.config import TrainConfig
from maskdet.training.train import train

TB_SCALARS = {
    "train/loss",
    "train/acc",
    "train/lr",
    "train/images_per_s",
    "train/data_wait_share",
    "val/loss",
    "val/acc",
    "val/auc",
    "val/threshold",
}
REAL_SCALARS = {"real/auc", "real/recall", "real/specificity", "real/accuracy"}


@pytest.fixture(scope="module")
def masked_data(masked_mini):
    """16 lfw-mini people with builtin masked twins (stages 01 and 02 for real)."""
    return masked_mini


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        epochs=2,
        batch_size=4,
        limit=8,
        val_limit=4,
        pretrained=False,
        wandb="disabled",
        workers=0,
        warmup_epochs=0.5,
    )
    return TrainConfig(**(base | kw))


@pytest.mark.slow
def test_overfits_one_batch(masked_data):
    torch.manual_seed(0)
    loader = make_loaders(masked_data, 8, "cached", workers=0, limit=8, splits=("val",))["val"]
    batch = next(iter(loader))
    assert set(batch.labels.tolist()) == {0.0, 1.0}
    model, _ = build_model("resnet50", pretrained=False, verbose=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    crit = torch.nn.BCEWithLogitsLoss()
    model.train()
    for step in range(25):  # noqa: B007 (reported when it fails)
        logits = model(batch.images).squeeze(1)
        loss = crit(logits, batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = ((logits.detach() > 0) == (batch.labels > 0.5)).float().mean().item()
        if acc == 1.0 and loss.item() < 0.1:
            break
    assert acc == 1.0 and loss.item() < 0.1, (step, acc, loss.item())


@pytest.mark.slow
def test_smoke_training_writes_every_sink(masked_data, real_small, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tmp_path / "data"
    shutil.copytree(masked_data, data, ignore=shutil.ignore_patterns("cache"))
    bad = select_rows(read_manifest(data), "train", limit=8)[0].path
    (data / bad).write_bytes(b"not an image at all")
    run = tmp_path / "run"
    summary = train(_cfg(data, run, wandb="offline", real_val=str(real_small)))
    assert summary["finished"] and summary["epochs_done"] == 2
    assert 0 <= summary["real_at_best"]["real/auc"] <= 1  # real crops measured, never chosen on
    assert summary["skipped_images"] == {bad: "not an image"}  # skipped and counted, no crash

    ea = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert TB_SCALARS | REAL_SCALARS <= set(tags["scalars"]), tags["scalars"]
    assert [e.step for e in ea.Scalars("val/auc")] == [1, 2]  # epochs numbered from 1
    assert [e.step for e in ea.Scalars("real/auc")] == [1, 2]
    assert {"val/roc", "train/samples"} <= set(tags["images"])
    assert "val/pr" in tags["tensors"]
    hp = EventAccumulator(str(run / "tb" / "hparams"))
    hp.Reload()
    assert any(t.startswith("hparam/") for t in hp.Tags()["scalars"])

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val/auc"]) <= 1 and float(r["train/images_per_s"]) > 0 for r in rows)
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in REAL_SCALARS)
    assert rows[0]["data/skipped"] == "1"
    assert not (run / "preds" / "val_epoch_000.csv").exists()
    preds = list(csv.DictReader(open(run / "preds" / "val_epoch_002.csv")))
    assert len(preds) == 4 and {p["label"] for p in preds} == {"0", "1"}
    assert all(0 <= float(p["prob"]) <= 1 for p in preds)
    assert (run / "preds" / "test_best.csv").exists()

    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert b"real/auc" in offline[0].read_bytes()  # the real metric reached WandB too

    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert ckpt["arch"] == "resnet50" and ckpt["image_size"] == 112
        assert ckpt["class_names"] == ["not_wearing_mask", "wearing_mask"]
        assert len(ckpt["mean"]) == 3 and 0 <= ckpt["threshold"] <= 1
    last = torch.load(run / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "epoch"} <= set(last)
    assert last["epoch"] == 2 and last["metrics"]["epoch"] == 2  # the last finished, from 1
    model, meta = load_model(run / "best.pt")
    assert meta["threshold"] == torch.load(run / "best.pt", weights_only=True)["threshold"]
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 1)


@pytest.mark.slow
def test_resume_equals_uninterrupted(masked_data, tmp_path, capsys):
    kw = dict(arch="resnet18", epochs=3, limit=12)
    cut = tmp_path / "cut"
    train(_cfg(masked_data, tmp_path / "full", **kw))
    part = train(_cfg(masked_data, cut, stop_after=1, **kw))
    assert part["epochs_done"] == 1 and not part["finished"]
    assert not (cut / "summary.json").exists()
    capsys.readouterr()
    resumed = train(_cfg(masked_data, cut, stop_after=1, **kw))  # a second session
    assert resumed["epochs_done"] == 2
    out = capsys.readouterr().out
    assert f"resuming {cut} at epoch 2 of 3 (from {cut / 'last.pt'}, saved after epoch 1" in out
    assert "FRESH = True" in out and "--no-resume" in out  # and how to start afresh
    resumed = train(_cfg(masked_data, cut, **kw))
    assert resumed["finished"]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3  # numbered from 1: the third and last epoch
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    metrics = [l for l in (cut / "metrics.jsonl").read_text().splitlines() if l]
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]  # each epoch once, from 1
    assert not (tmp_path / "full" / "wandb").exists()  # disabled mode makes no WandB run

    capsys.readouterr()
    train(_cfg(masked_data, cut, **kw))  # re-run when finished: says so and how to retrain
    out = capsys.readouterr().out
    assert "already trained, epoch 3 of 3 done" in out and "FRESH = True" in out
    fresh = train(_cfg(masked_data, cut, resume=False, stop_after=1, **kw))  # FRESH = True
    assert fresh["epochs_done"] == 1
    assert torch.load(cut / "last.pt", weights_only=True)["epoch"] == 1
    assert [json.loads(m)["epoch"] for m in (cut / "metrics.jsonl").read_text().splitlines()] == [1]
    assert torch.load(cut / "best.pt", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_cpu_bf16_trains_in_bf16_where_the_cpu_has_it(masked_data, tmp_path, capsys):
    from maskdet.core.system import cpu_has_fast_bf16

    kw = dict(arch="resnet18", epochs=1, device="cpu")
    train(_cfg(masked_data, tmp_path / "fp32", **kw))
    summary = train(_cfg(masked_data, tmp_path / "bf16", cpu_bf16=True, **kw))
    out = capsys.readouterr().out
    a = torch.load(tmp_path / "fp32" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)["model"]
    assert all(v.dtype == a[k].dtype for k, v in b.items())  # the weights stay float32
    assert all(torch.isfinite(v.float()).all() for v in b.values())
    changed = any(not torch.equal(v, b[k]) for k, v in a.items() if v.is_floating_point())
    if cpu_has_fast_bf16():  # here: AVX512-BF16; the steps ran in bf16, so the weights differ
        assert "cpu_bf16 True" in out and changed
    else:  # ignored with a notice, and the run is the float32 one
        assert "--cpu-bf16 ignored" in out and not changed
    assert summary["finished"]


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).with_name("PWNED"),))


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    marker = Path(__file__).with_name("PWNED")
    marker.unlink(missing_ok=True)
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": "maskdet-checkpoint-v1",
            "arch": "resnet18",
            "model": model.state_dict(),
            "extra": _Payload(),
        },
        path,
    )
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.slow
def test_bench_train_prints_model_only_and_full_pipeline_side_by_side(masked_data, capsys):
    from maskdet.bench.train import CPU_BF16_SETTING
    from maskdet.core.system import cpu_has_fast_bf16

    res = bench_train(data=str(masked_data), device="cpu", batches=1, arch="resnet18", batch_size=8)
    out = capsys.readouterr().out
    expected = {"eager fp32", "channels_last fp32"} | (
        {CPU_BF16_SETTING} if cpu_has_fast_bf16() else set()
    )
    assert set(res["model_only"]) == set(res["full_pipeline"]) == expected
    assert all(v > 0 for v in res["model_only"].values())
    assert all(v > 0 for v in res["full_pipeline"].values())
    for name, r in res["ratio"].items():
        assert r == pytest.approx(res["full_pipeline"][name] / res["model_only"][name])
    assert "model only" in out and "pipeline" in out and "%" in out
