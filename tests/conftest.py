"""Shared fixtures: real faces from ../shared/data (never mocked, never committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKDET_SHARED", ROOT.parent / "shared"))
LFW_MINI = SHARED / "data" / "lfw-mini.tgz"
LFW_MINI_MD5 = "2599b9f3259c377c5faabec053f871a5"
LFW_FULL = SHARED / "data" / "lfw-deepfunneled.tgz"
QUALITATIVE = SHARED / "qualitative"
os.environ.setdefault("MASKTHEFACE_DIR", "")
"""The tests draw with MaskTheFace only where MASKTHEFACE_DIR names a checkout: never from a
third_party/ clone that tools/setup_env.sh may have made (empty: the builtin renderer)."""


def pytest_collection_modifyitems(items):
    """Tests that use a trained model are slow (``pytest -m "not slow"`` leaves them out)."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def lfw_mini() -> Path:
    if not LFW_MINI.exists():
        pytest.fail(f"{LFW_MINI} is missing: the tests need ../shared/data beside the checkout")
    return LFW_MINI


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory, lfw_mini) -> Path:
    """Stage 01 output for lfw-mini (all 150 people), made once per test session.

    Tests must not modify it: copy it first (see ``mini_copy``)."""
    from maskdet.faces.data import download_and_prepare

    out = tmp_path_factory.mktemp("mini") / "data"
    download_and_prepare(str(lfw_mini), out, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def small_faces(tmp_path_factory, lfw_mini) -> Path:
    """Stage 01 output for 16 lfw-mini people (synthesis tests); copy it before modifying."""
    from maskdet.faces.data import download_and_prepare

    out = tmp_path_factory.mktemp("small") / "data"
    download_and_prepare(str(lfw_mini), out, seed=0, limit_identities=16, progress=False)
    return out


@pytest.fixture(scope="session")
def masked_mini(tmp_path_factory, lfw_mini) -> Path:
    """16 lfw-mini people through stage 01 and stage 02 (builtin masks), for real; read-only."""
    from maskdet.faces.data import download_and_prepare
    from maskdet.synthesis.synthesis import synthesize_dataset

    out = tmp_path_factory.mktemp("masked") / "data"
    download_and_prepare(str(lfw_mini), out, seed=0, limit_identities=16, progress=False)
    synthesize_dataset(out, backend="builtin", workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, masked_mini) -> Path:
    """One epoch of a ResNet-18 from random init on the masked lfw-mini subset: a real checkpoint,
    per-epoch val predictions and TensorBoard events (no mocks)."""
    from maskdet.training.config import TrainConfig
    from maskdet.training.train import train

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


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory) -> Path:
    """A random-init ResNet-18 exported as the kiosk and ``predict`` run it (``model.onnx`` and
    ``model.json``): a real model for tests of the mechanics, quick to make (no training)."""
    import torch

    from maskdet.core.model import build_model
    from maskdet.deploy.export import export_module

    torch.manual_seed(0)
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    out = tmp_path_factory.mktemp("onnx")
    export_module(model.eval(), {"arch": "resnet18", "threshold": 0.5}, out, ("onnx",))
    return out / "model.onnx"


REALDEV = SHARED / "realdev"


@pytest.fixture(scope="session")
def real_small(tmp_path_factory) -> Path:
    """12 real masked and 12 real unmasked crops from ../shared/realdev (read-only copy)."""
    import shutil

    if not (REALDEV / "labels.csv").exists():
        pytest.fail(f"{REALDEV} is missing: the tests need ../shared/realdev beside the checkout")
    out = tmp_path_factory.mktemp("real") / "real"
    for sub in ("mask", "nomask"):
        (out / sub).mkdir(parents=True)
        for f in sorted((REALDEV / sub).glob("*.png"))[:12]:
            shutil.copyfile(f, out / sub / f.name)
    return out


@pytest.fixture(scope="session")
def lfw_tree(tmp_path_factory, lfw_mini) -> Path:
    """lfw-mini extracted: ``lfw-deepfunneled/<Person>/<Person>_NNNN.jpg`` (read-only)."""
    import tarfile

    out = tmp_path_factory.mktemp("tree")
    with tarfile.open(lfw_mini) as tf:
        tf.extractall(out, filter="data")
    return out / "lfw-deepfunneled"


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as training writes it (a ResNet-18's weights and the inference metadata)."""
    import torch

    from maskdet.core.checkpoint import checkpoint_meta, save_checkpoint
    from maskdet.core.model import build_model
    from maskdet.training.config import TrainConfig

    torch.manual_seed(0)
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    cfg = TrainConfig(arch="resnet18")
    save_checkpoint(
        path, checkpoint_meta("resnet18", 0.5, vars(cfg)) | {"model": model.state_dict()}
    )
    return path
