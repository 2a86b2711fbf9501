"""The classifier: torchvision ResNet-50 (or ResNet-18 for ablations) with one output logit.

ImageNet weights are used when they can be loaded (Colab, or a copy in torch's hub cache);
otherwise the network starts from random initialisation and says so clearly. Nothing here waits
on a network that is not there: a short connectivity probe runs before any download.
:func:`architecture_table` and :func:`draw_architecture` describe the model from the model itself
(forward hooks at the real input size), for the report's ResNet-50 section.
"""

from __future__ import annotations

import math
import socket
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torchvision.models as tvm
from matplotlib.patches import FancyBboxPatch
from torch import nn

from .constants import IMAGE_SIZE
from .system import can_reach

ARCHS = ("resnet50", "resnet18")
WEIGHTS = {"resnet50": "ResNet50_Weights", "resnet18": "ResNet18_Weights"}
WEIGHTS_HOST = ("download.pytorch.org", 443)


def load_imagenet_weights(arch: str, progress: bool = False) -> dict | None:
    """ImageNet ``state_dict`` from torch's hub cache or download.pytorch.org; ``None`` if neither."""
    weights = getattr(tvm, WEIGHTS[arch]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.exists() and not can_reach(WEIGHTS_HOST):
        return None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as err:  # network error, partial file, hash mismatch
        warnings.warn(f"could not load ImageNet weights for {arch}: {err}", stacklevel=2)
        return None
    finally:
        socket.setdefaulttimeout(old)


def build_model(
    arch: str = "resnet50", pretrained: bool = True, verbose: bool = True
) -> tuple[nn.Module, bool]:
    """The network with ``fc`` replaced by a single logit; returns ``(model, imagenet_loaded)``.

    With ``pretrained`` the ImageNet weights are loaded when available; when they cannot be
    (offline), a clear notice is printed and the model keeps its random initialisation.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    model = getattr(tvm, arch)(weights=None)
    loaded = False
    if pretrained:
        state = load_imagenet_weights(arch)
        if state is None:
            if verbose:
                print(
                    f"NOTICE: ImageNet weights for {arch} could not be loaded (offline?): "
                    "training from random initialisation. Expect slower learning; on Colab "
                    "the weights download automatically."
                )
        else:
            model.load_state_dict(state)
            loaded = True
            if verbose:
                print(f"{arch}: ImageNet weights loaded")
    elif verbose:
        print(f"{arch}: random initialisation (--no-pretrained)")
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model, loaded


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def architecture_table(model: nn.Module, image_size: int = IMAGE_SIZE) -> list[dict]:
    """One row per stem layer, residual block and head layer: name, kind, output shape, params.

    Shapes come from forward hooks on a real forward pass at ``image_size`` x ``image_size``.
    """
    rows: list[dict] = []
    hooks = []
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            units += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        else:
            units.append((name, child))
    for name, mod in units:

        def hook(m, inp, out, name=name):
            rows.append(
                {
                    "name": name,
                    "kind": type(m).__name__,
                    "in_shape": tuple(inp[0].shape[1:]),
                    "out_shape": tuple(out.shape[1:]),
                    "params": count_params(m),
                }
            )

        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def format_table(rows: list[dict]) -> str:
    """The architecture table as aligned text."""
    lines = [f"{'layer':12s} {'type':18s} {'output (C x H x W)':>20s} {'params':>12s}"]
    for r in rows:
        shape = " x ".join(str(s) for s in r["out_shape"])
        lines.append(f"{r['name']:12s} {r['kind']:18s} {shape:>20s} {r['params']:>12,d}")
    lines.append(f"{'total':12s} {'':18s} {'':>20s} {sum(r['params'] for r in rows):>12,d}")
    return "\n".join(lines)


def _stages(rows: list[dict]) -> list[dict]:
    """Group the table into stem, layer1..4 and head for the diagram."""
    groups: list[dict] = []
    for r in rows:
        stage = r["name"].split(".")[0]
        if stage in ("conv1", "bn1", "relu", "maxpool"):
            stage = "stem"
        elif stage in ("avgpool", "fc"):
            stage = "head"
        if not groups or groups[-1]["stage"] != stage:
            groups.append({"stage": stage, "rows": []})
        groups[-1]["rows"].append(r)
    return groups


def draw_architecture(model: nn.Module, image_size: int = IMAGE_SIZE, title: str | None = None):
    """A matplotlib figure of the network drawn from its own modules and hooked tensor shapes.

    Left to right: input, stem (conv 7x7/2, BN, ReLU, max-pool), the four residual stages with
    one box per block (downsampling blocks marked), global average pool and the 1-logit head;
    each box shows the block's output shape at ``image_size`` input; box height grows with the
    channel count.
    """
    rows = architecture_table(model, image_size)
    groups = _stages(rows)
    colours = {
        "stem": "#8fb3d9",
        "layer1": "#a6d96a",
        "layer2": "#fdd96a",
        "layer3": "#fdae61",
        "layer4": "#f47c6a",
        "head": "#c2a5cf",
    }
    boxes = [("input", "Input", (3, image_size, image_size), "#dddddd", False)]
    for g in groups:
        if g["stage"] in ("stem", "head"):
            label = {"stem": "conv7x7/2\nBN ReLU\nmaxpool3x3/2", "head": "avgpool\nfc -> 1 logit"}[
                g["stage"]
            ]
            boxes.append(
                (g["stage"], label, g["rows"][-1]["out_shape"], colours[g["stage"]], False)
            )
        else:
            for r in g["rows"]:
                down = r["in_shape"] != r["out_shape"]
                boxes.append(
                    (
                        g["stage"],
                        f"{r['kind']}\n{r['name']}",
                        r["out_shape"],
                        colours.get(g["stage"], "#eee"),
                        down,
                    )
                )
    n = len(boxes)
    fig, ax = plt.subplots(figsize=(max(10, 0.62 * n), 4.2))
    x = 0.0
    max_c = max(b[2][0] for b in boxes)
    centers = []
    for _stage, label, shape, col, down in boxes:
        h = 0.6 + 2.2 * math.log2(max(shape[0], 2)) / math.log2(max_c)
        ax.add_patch(
            FancyBboxPatch(
                (x, -h / 2),
                0.5,
                h,
                boxstyle="round,pad=0.02",
                fc=col,
                ec="black",
                lw=1.6 if down else 0.6,
            )
        )
        ax.text(
            x + 0.25,
            h / 2 + 0.12,
            "x".join(str(s) for s in shape),
            ha="center",
            va="bottom",
            fontsize=6,
            rotation=90,
        )
        ax.text(x + 0.25, 0, label, ha="center", va="center", fontsize=5.5, rotation=90)
        centers.append(x + 0.25)
        x += 0.62
    for a, b in zip(centers[:-1], centers[1:]):
        ax.annotate("", (b - 0.25, 0), (a + 0.25, 0), arrowprops={"arrowstyle": "-", "lw": 0.5})
    # stage labels under the boxes
    idx = 0
    for name, group in [("input", [None])] + [
        (g["stage"], g["rows"] if g["stage"] not in ("stem", "head") else [None]) for g in groups
    ]:
        first, last = centers[idx], centers[idx + len(group) - 1]
        params = (
            ""
            if name == "input"
            else f"\n{sum(r['params'] for r in next(g for g in groups if g['stage'] == name)['rows']) / 1e6:.2f}M params"
        )
        ax.text((first + last) / 2, -2.15, f"{name}{params}", ha="center", va="top", fontsize=7)
        idx += len(group)
    total = count_params(model)
    arch = title or type(model).__name__
    ax.set_title(
        f"{arch}: {total / 1e6:.1f}M parameters, input {image_size}x{image_size}; "
        "bold border = block that downsamples / widens (projection shortcut)",
        fontsize=9,
    )
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-2.9, 2.6)
    ax.axis("off")
    fig.tight_layout()
    return fig
