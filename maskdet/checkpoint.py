"""Checkpoints: the format, atomic save, safe load (``weights_only``), the model for inference and
the RNG states that make a resumed run end with the same weights as an uninterrupted one.

A checkpoint is a dict of tensors and plain Python values: ``format``, the model's ``arch``,
what inference needs (``image_size``, ``resize_size``, ``mean``, ``std``, ``class_names``,
``positive_class``, the decision ``threshold`` chosen on val), ``hparams`` and ``epoch``,
``model`` (the state dict) and, in ``last.pt``, the optimizer, scheduler, scaler and RNG states.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .constants import CLASS_NAMES, FACE_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from .model import build_model

CHECKPOINT_FORMAT = "maskdet-checkpoint-v1"
RETRAIN_HINT = (
    "train a model first (notebook 04_train_resnet50 or `python -m maskdet train`) or give "
    "another checkpoint"
)
"""The fix named when a checkpoint cannot be used for inference."""
TRAINING_STATE = ("model", "optimizer", "scheduler", "scaler", "rng")
"""Keys that hold training state rather than metadata."""


def plain(v):
    """``v`` as a value ``weights_only`` loading accepts (numbers, strings, bools, None)."""
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def checkpoint_meta(arch: str, threshold: float, hparams: dict) -> dict:
    """What every checkpoint says about the model and its input (all plain values)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "image_size": IMAGE_SIZE,
        "resize_size": FACE_SIZE,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "threshold": float(threshold),
        "hparams": {k: plain(v) for k, v in hparams.items()},
    }


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomic ``torch.save`` (temporary file, then rename): a cut never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, why, and the fix."""


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    fix: str = RETRAIN_HINT,
) -> dict:
    """``torch.load(..., weights_only=True)``: anything but tensors and plain values is refused.

    A missing, empty, truncated or foreign file raises :class:`CheckpointError` naming the file
    and ``fix`` (what to do instead), never the reader's own error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file: {fix}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint: {fix}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds more than tensors and plain values "
            f"(weights_only=True): {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # torch's readers fail with EOFError, KeyError, zip errors, ...
        why = str(err).strip().split(". ")[0][:100] or type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (damaged, truncated or another kind of file: "
            f"{why}): {fix}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a maskdet checkpoint: {fix}")
    return ckpt


WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Name prefixes of DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) wrappers."""


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights under a plain model's names. This project saves them so;
    a state dict saved from a DDP or compiled wrapper elsewhere has its prefixes removed."""
    state = ckpt["model"]
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Model in eval mode plus its metadata (arch, image_size, mean, std, class_names, threshold)."""
    ckpt = load_checkpoint(path, "cpu")
    try:
        model, _ = build_model(ckpt["arch"], pretrained=False, verbose=False)
        model.load_state_dict(model_state(ckpt))
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: its weights do not fit a {ckpt.get('arch', '?')} model "
            f"({str(err).splitlines()[0][:100]}): {RETRAIN_HINT}"
        ) from None
    meta = {k: v for k, v in ckpt.items() if k not in TRAINING_STATE}
    return model.to(device).eval(), meta


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": py[0],
            "state": torch.tensor(py[1], dtype=torch.int64),
            "gauss_next": py[2],
        },
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
