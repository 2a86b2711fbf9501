"""Checkpoints: the format, atomic save, safe load (``weights_only``), the model for inference and
the RNG states that make a resumed run end with the same weights as an uninterrupted one.

A checkpoint is a dict of tensors and plain Python values: ``format``, the model's ``arch``,
what inference needs (``image_size``, ``resize_size``, ``mean``, ``std``, ``class_names``,
``positive_class``, the decision ``threshold`` chosen on val), ``hparams`` and ``epoch``,
``model`` (the state dict) and, in ``last.pt``, the optimizer, scheduler, scaler and RNG states.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .constants import CLASS_NAMES, FACE_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from .guard import UnsafeFile, check_regular
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


DIGEST_KEY = "weights_sha256"
"""The sha256 of the model's weights (:func:`weights_digest`), saved with them and checked on
every load: bit rot or a half-synced copy inside a tensor is refused, never used."""
MAX_CHECKPOINT_BYTES = 8 << 30
"""Largest checkpoint file read (a ResNet-50's ``last.pt``: about 300 MB)."""


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """The sha256 of a state dict: every tensor's name, dtype, shape and bytes, by name."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(state[name].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomic ``torch.save`` (temporary file, then rename): a cut never leaves half a checkpoint.
    The model's weights are saved with their digest (:data:`DIGEST_KEY`)."""
    path = Path(path)
    if "model" in payload:
        payload = payload | {DIGEST_KEY: weights_digest(payload["model"])}
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, why, and the fix."""


def check_weights(path: Path, ckpt: dict, fix: str) -> None:
    """Refuse weights that are not those saved (their digest differs) or not finite (NaN, inf);
    a checkpoint saved before digests loads with a one-line notice."""
    state = ckpt.get("model")
    if not isinstance(state, dict):
        return
    want = ckpt.get(DIGEST_KEY)
    if want is None:
        print(
            f"NOTICE: {path} has no weights digest (saved by an older maskdet): its weights "
            "cannot be checked for damage",
            file=sys.stderr,
        )
    elif weights_digest(state) != want:
        raise CheckpointError(
            f"{path}: its weights do not match the digest saved with them (damaged on disk, or "
            f"a copy cut short or half-synced): {fix}"
        )
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values: {fix}")


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    fix: str = RETRAIN_HINT,
) -> dict:
    """``torch.load(..., weights_only=True)``: anything but tensors and plain values is refused.

    A missing, empty, truncated, special or foreign file, and weights that fail their digest or
    are not finite (:func:`check_weights`), raise :class:`CheckpointError` naming the file and
    ``fix`` (what to do instead), never the reader's own error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file: {fix}")
    try:
        size = check_regular(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except UnsafeFile as err:
        raise CheckpointError(f"{path}: {err}: {fix}") from None
    if size == 0:
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
    check_weights(path, ckpt, fix)
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


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def state_misfit(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``expected``, in one
    line: the missing and unexpected names and the tensors of another shape (first few of
    each, with counts); "" when it fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{len(names)} {what} ({_some(names, n)})"
        for names, what, n in (
            (missing, "missing", 3),
            (unexpected, "unexpected", 3),
            (shapes, "of another shape", 2),
        )
        if names
    ]
    return "; ".join(parts)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Model in eval mode plus its metadata (arch, image_size, mean, std, class_names, threshold)."""
    ckpt = load_checkpoint(path, "cpu")
    try:
        model, _ = build_model(ckpt["arch"], pretrained=False, verbose=False)
        state = model_state(ckpt)
        misfit = state_misfit(model.state_dict(), state)
        if misfit:
            raise ValueError(misfit)
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: its weights do not fit a {ckpt.get('arch', '?')} model "
            f"({' '.join(str(err).split())[:400]}): {RETRAIN_HINT}"
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
