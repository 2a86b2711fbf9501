"""Grad-CAM (Selvaraju et al., 2017): where the classifier looks when it says "mask" or "no mask".

For the single-logit ResNet the class score is the logit itself (evidence for ``wearing_mask``)
or its negative (evidence for ``not_wearing_mask``). The map is ``ReLU(sum_c w_c A_c)`` with
``A`` the activations of a convolutional stage (default ``layer4``, 4x4 at 112x112 input;
``layer3`` gives 7x7) and ``w_c`` the spatial mean of the score's gradient; it is upsampled
bilinearly to the input's size and scaled to [0, 1].
"""

from __future__ import annotations

import math

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _layer(model: nn.Module, name: str) -> nn.Module:
    mod = model
    for part in name.split("."):
        mod = getattr(mod, part)
    return mod


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: str = "predicted", layer: str = "layer4"
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for a normalised batch ``x`` (N, 3, H, W).

    ``target``: ``"mask"`` (explain the logit), ``"no_mask"`` (explain its negative) or
    ``"predicted"`` (whichever class the model predicts for each image at 0.5).
    A map that is zero everywhere (no positive evidence) stays zero.
    """
    if target not in ("mask", "no_mask", "predicted"):
        raise ValueError(f"target must be 'mask', 'no_mask' or 'predicted', not {target!r}")
    acts: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    mod = _layer(model, layer)
    h1 = mod.register_forward_hook(lambda m, i, o: acts.append(o))
    h2 = mod.register_full_backward_hook(lambda m, gi, go: grads.append(go[0]))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xx = (
                x.detach().clone().requires_grad_(True)
            )  # so the hooks see a graph even if params are frozen
            logit = model(xx).reshape(-1)
            if target == "mask":
                sign = torch.ones_like(logit)
            elif target == "no_mask":
                sign = -torch.ones_like(logit)
            else:
                sign = torch.where(logit >= 0, 1.0, -1.0)
            model.zero_grad(set_to_none=True)
            (logit * sign).sum().backward()
    finally:
        h1.remove()
        h2.remove()
        model.train(was_training)
    a, g = acts[0].detach(), grads[0].detach()
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((w * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    cam = torch.where(hi > lo, (cam - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(cam))
    return cam.cpu().numpy()


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 image with the map drawn over it (jet colour map)."""
    if cam.shape != rgb.shape[:2]:
        cam = cv2.resize(
            cam.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR
        )
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(
        np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32), 0, 255)
    )


def gallery(
    model: nn.Module,
    crops: list[np.ndarray],
    preprocess,
    titles: list[str] | None = None,
    layer: str = "layer4",
    target: str = "predicted",
    cols: int = 6,
    title: str = "",
):
    """Figure: each face crop (top) and its Grad-CAM overlay (bottom), for ``target``.

    ``preprocess``: crops -> normalised batch (e.g. ``MaskClassifier.preprocess``); the overlay is
    drawn on the centre crop the network actually sees.
    """
    if not crops:
        raise ValueError("no faces to show")
    x = torch.from_numpy(preprocess(crops))
    cams = grad_cam(model, x, target, layer)
    s = x.shape[-1]
    rows = math.ceil(len(crops) / cols)
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(1.9 * cols, 4.0 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, (crop, cam) in enumerate(zip(crops, cams)):
        r, c = 2 * (i // cols), i % cols
        h, w = crop.shape[:2]
        y0, x0 = (h - s) // 2, (w - s) // 2
        seen = crop[y0 : y0 + s, x0 : x0 + s] if min(h, w) >= s else crop
        axes[r, c].imshow(seen)
        axes[r + 1, c].imshow(overlay(seen, cam))
        if titles:
            axes[r, c].set_title(titles[i], fontsize=7)
    fig.suptitle(title or f"Grad-CAM ({layer}, {target} class)", fontsize=9)
    return fig
