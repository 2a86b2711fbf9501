"""The project's settings, each value written once.

- :class:`TrainConfig`: stage 04's settings; its defaults are the assignment (50 epochs, batch
  64, lr 0.01) and ``python -m maskdet train`` has one option per field.
- :data:`RUN_PRESETS`: the notebooks' parameters per preset (``smoke``, ``demo``, ``full``);
  ``full`` takes its training values from :class:`TrainConfig`. ``tools/build_notebooks.py``
  writes each notebook's parameters cell from them (:func:`notebook_params`): ``PRESET =
  "auto"`` first, the values that differ between presets left to it.
- :data:`ABLATION_PRESETS`: the settings of ``python -m maskdet ablate``.
- Command-line options derived from what they configure (:func:`add_options`): a dataclass's
  fields or a function's keyword parameters give each option its name, type, default, help and
  choices, so that the command line cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.constants import LFW_MINI
from ..core.errors import UsageError
from ..core.model import ARCHS
from ..loading.augment_presets import AUGMENT_PRESETS, BASE_AUGMENTS
from .sinks import WANDB_MODES


def opt(default: Any, help: str = "", choices: tuple | None = None, minimum: int = 0) -> Any:
    """A dataclass field with the help text, choices and (for counts) the smallest value of its
    command-line option."""
    return field(default=default, metadata={"help": help, "choices": choices, "min": minimum})


def count(minimum: int = 0) -> Callable[[str], int]:
    """An argparse type for a count: an integer of at least ``minimum`` (``-5`` is refused,
    never read as "all but five")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def probability(text: str) -> float:
    """An argparse type for a probability: a number from 0 to 1 (``nan``, ``7``, ``-1`` are
    refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def seed_list(text: str) -> list[int]:
    """An argparse type for comma-separated seeds (whole numbers of 0 or more)."""
    parse = count()
    return [parse(part.strip()) for part in text.split(",")]


def check_counts(target: Any) -> None:
    """Raise :class:`UsageError` for an int field of a dataclass below its ``minimum``."""
    for f in dataclasses.fields(target):
        value = getattr(target, f.name)
        if isinstance(value, int) and not isinstance(value, bool):
            low = f.metadata.get("min", 0)
            if value < low:
                raise UsageError(f"{f.name} must be {low} or more, got {value}")


@dataclass
class TrainConfig:
    """Stage 04's settings (``python -m maskdet train`` has one option per field)."""

    data: str = opt("data/demo", "DATA_DIR (stages 01-02 output)")
    out: str = opt("runs/demo", "RUN_DIR: checkpoints, metrics, TensorBoard, WandB")
    epochs: int = opt(50, minimum=1)
    batch_size: int = opt(64, minimum=1)
    lr: float = opt(0.01)
    optimizer: str = opt("sgd", "sgd (momentum 0.9, Nesterov) | adamw", ("sgd", "adamw"))
    weight_decay: float | None = opt(None, "default: 1e-4 for SGD, 0.05 for AdamW")
    warmup_epochs: float = opt(2.0, "linear warm-up, then cosine decay per step")
    min_lr_ratio: float = opt(0.01, "the cosine decay ends at this fraction of lr")
    arch: str = opt("resnet50", choices=ARCHS)
    pretrained: bool = opt(True, "ImageNet weights when they can be loaded")
    loader: str = opt("cached", choices=("cached", "dataloader"))
    progress: bool = opt(True, "a text bar per epoch: steps, running loss, images/s")
    cache_dir: str | None = opt(
        None,
        "where the cached loader keeps its decoded images (default: $MASKDET_CACHE, else "
        "DATA_DIR/cache; a read-only DATA_DIR falls back to ~/.cache/maskdet)",
    )
    aug: str = opt("default", "augmentation preset", tuple(AUGMENT_PRESETS))
    workers: int | None = opt(None, "default: the machine's cores (max 8)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    limit: int | None = opt(None, "at most N images per split (whole twin pairs)")
    val_limit: int | None = opt(None, "at most N val/test images (default --limit)")
    seed: int = opt(0)
    amp: bool = opt(True, "mixed precision (CUDA only)")
    cpu_bf16: bool = opt(
        False,
        "bfloat16 autocast for the training steps on a CPU with AVX512-BF16 or AMX "
        "(about 2x for ResNet-50 on such a CPU; validation stays float32)",
    )
    channels_last: bool = opt(True, "channels_last memory layout (CUDA only)")
    compile: bool = opt(False, "torch.compile the model")
    sync_bn: bool = opt(
        False,
        "under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm on GPUs); "
        "worth it when each rank gets a small part of the batch",
    )
    dist_timeout: float = opt(
        600.0, "under torchrun: seconds a rank waits for the others before the job ends"
    )
    wandb: str = opt("auto", "auto: online with an API key, else offline", WANDB_MODES)
    wandb_project: str = opt("mask-detection")
    tensorboard: bool = opt(True)
    resume: bool = opt(True, "continue after the last finished epoch in RUN_DIR/last.pt")
    stop_after: int | None = opt(None, "stop after N epochs in this call (simulates a cut)")
    test_preds: bool = opt(True, "at the end, predict the test split with best.pt")
    real_val: str | None = opt(
        None,
        "real crops (mask/ + nomask/, or labels.csv) measured every epoch beside val: real AUC, "
        "recall and specificity in the metrics; never used to choose the checkpoint or threshold",
    )
    real_val_limit: int | None = opt(None, "at most N real crops per class for real_val")

    def __post_init__(self) -> None:
        check_counts(self)
        if not self.lr > 0:
            raise UsageError(f"lr must be above 0, got {self.lr}")
        if self.device not in ("auto", ""):
            try:
                torch.device(self.device)
            except RuntimeError:
                raise UsageError(
                    f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}"
                ) from None


_TRAIN = TrainConfig()
_COMMON = {
    "SYNTH_BACKEND": "",
    "LOOK": "real",
    "HARD_NEGATIVES": 0.3,
    "CPU_BF16": True,
    "WORKERS": 2,
    "SEED": _TRAIN.seed,
    "LR": _TRAIN.lr,
    "OPTIMIZER": _TRAIN.optimizer,
    "ARCH": _TRAIN.arch,
    "LOADER": _TRAIN.loader,
    "AUG": _TRAIN.aug,
    "SPLIT": "test",
    "N_BOOT": 1000,
    "BENCH_COMPILE": False,
    "PHOTOS_DIR": "auto",
    "REAL_DIR": "auto",
    "REAL_LIMIT": 0,
    "UPLOAD": False,
    "DETECTOR": "yunet",
    "SHOW_PHOTOS": 20,
    "CLIP_FRAMES": 45,
    "WEBCAM": False,
    "DEVICE": _TRAIN.device,
    "FRESH": not _TRAIN.resume,
}
RUN_PRESETS: dict[str, dict] = {
    # CI: lfw-mini, a handful of images through every stage (minutes on 2 cores)
    "smoke": {
        **_COMMON,
        "SOURCE": str(LFW_MINI),
        "DATA_DIR": "data/smoke",
        "RUN_DIR": "runs/smoke",
        "ABLATIONS_DIR": "runs/smoke/ablations",
        "LIMIT_IDENTITIES": 30,
        "EPOCHS": 1,
        "BATCH_SIZE": 4,
        "WARMUP_EPOCHS": 0.5,
        "LIMIT": 8,
        "VAL_LIMIT": 4,
        "PRETRAINED": False,
        "WANDB": "disabled",
        "REAL_VAL_LIMIT": 8,
        "REAL_LIMIT": 8,
        "BENCH_BATCHES": 1,
        "CLIP_FRAMES": 15,
    },
    # a 2-core CPU in about 15 minutes: as many different people as that allows, few epochs
    "demo": {
        **_COMMON,
        "SOURCE": "lfw",
        "DATA_DIR": "data/demo",
        "RUN_DIR": "runs/demo",
        "ABLATIONS_DIR": "runs/demo/ablations",
        "LIMIT_IDENTITIES": 1500,
        "EPOCHS": 3,
        "BATCH_SIZE": 32,
        "WARMUP_EPOCHS": 0.5,
        "LIMIT": 4000,
        "VAL_LIMIT": 300,
        "PRETRAINED": _TRAIN.pretrained,
        "WANDB": _TRAIN.wandb,
        "REAL_VAL_LIMIT": 150,
        "BENCH_BATCHES": 5,
    },
    # the assignment on a GPU: all of LFW, the training defaults (50 epochs, batch 64, lr 0.01)
    "full": {
        **_COMMON,
        "SOURCE": "lfw",
        "DATA_DIR": "data/full",
        "RUN_DIR": "runs/full",
        "ABLATIONS_DIR": "runs/full/ablations",
        "LIMIT_IDENTITIES": 0,
        "EPOCHS": _TRAIN.epochs,
        "BATCH_SIZE": _TRAIN.batch_size,
        "WARMUP_EPOCHS": _TRAIN.warmup_epochs,
        "LIMIT": 0,
        "VAL_LIMIT": 0,
        "PRETRAINED": _TRAIN.pretrained,
        "WANDB": _TRAIN.wandb,
        "REAL_VAL_LIMIT": 0,
        "BENCH_BATCHES": 20,
    },
}
"""Every notebook parameter per preset (``python -m maskdet run --preset``); papermill passes
each notebook only the parameters its parameters cell declares."""
PARAM_NOTES = {
    "SOURCE": '"lfw" | "celeba" | "gdrive:<id or url>" | a local .tgz/.zip/folder',
    "LIMIT_IDENTITIES": "people to keep (0: all 5,749)",
    "SYNTH_BACKEND": "empty: masktheface when its checkout is present, else builtin",
    "LOOK": '"real" (real-photo colours, shading, ear loops, size jitter) or "legacy"',
    "HARD_NEGATIVES": "share of faces also copied unmasked with a beard/hand/scarf/collar/mic",
    "CPU_BF16": "bf16 training steps on a CPU with AVX512-BF16/AMX (ignored elsewhere)",
    "WORKERS": "worker processes (default in code: the machine's cores)",
    "BATCH_SIZE": "images per step",
    "LOADER": '"cached" (decode once, augment whole batches on the device) or "dataloader"',
    "AUG": "augmentation preset: " + " | ".join(BASE_AUGMENTS),
    "OPTIMIZER": "sgd or adamw (AdamW usually wants a learning rate near 1e-3)",
    "ARCH": "resnet18 for quick ablations",
    "PRETRAINED": "ImageNet weights when they can be downloaded (Colab); random init otherwise",
    "LIMIT": "0: every image, else at most LIMIT images per split (whole twin pairs)",
    "VAL_LIMIT": "0: every val/test image, else at most this many (whole twin pairs)",
    "WANDB": 'auto: online with an API key, offline without; "disabled" turns it off',
    "BENCH_BATCHES": "timed batches per setting in the speed tables (0 skips 04's)",
    "BENCH_COMPILE": "True adds the torch.compile settings on a GPU (minutes of compiling)",
    "N_BOOT": "bootstrap resamples for the AUC interval",
    "ABLATIONS_DIR": "where `python -m maskdet ablate --out` wrote its tables",
    "PHOTOS_DIR": "auto: ../shared/qualitative, else downloaded (CC0 photos); or a folder",
    "REAL_DIR": "auto: ../shared/realdev, else built from its source; or a folder of real crops",
    "REAL_LIMIT": "0: every real crop, else at most this many per class",
    "REAL_VAL_LIMIT": "real crops per class measured after every epoch (0: all)",
    "DETECTOR": "yunet | mtcnn (slower) | hog (the baseline)",
    "SHOW_PHOTOS": "photos drawn with their boxes",
    "CLIP_FRAMES": "frames of the kiosk clip made from the photos (15 per second)",
    "WEBCAM": "Colab only: take a photo with your webcam and classify it",
    "DEVICE": '"auto" (CUDA when present) | "cpu" | "cuda"; PRESET "auto" follows it',
    "FRESH": "True: train from the start (RUN_DIR's checkpoints removed); False: resume",
}
"""What each notebook parameter means (the comment beside it in the parameters cell)."""

ABLATION_PRESETS: dict[str, dict] = {
    "smoke": {
        "epochs": 1,
        "batch_size": 8,
        "limit": 16,
        "val_limit": 8,
        "arch": "resnet18",
        "seeds": [0],
        "warmup_epochs": 0.0,
        "pretrained": False,
        "n_boot": 100,
    },
    "small": {
        "epochs": 3,
        "batch_size": 32,
        "limit": 400,
        "val_limit": 120,
        "arch": "resnet18",
        "seeds": [0, 1, 2],
        "warmup_epochs": 0.5,
        "pretrained": _TRAIN.pretrained,
        "n_boot": 500,
    },
    "full": {
        "epochs": 20,
        "batch_size": _TRAIN.batch_size,
        "limit": _TRAIN.limit,
        "val_limit": _TRAIN.val_limit,
        "arch": _TRAIN.arch,
        "seeds": [0, 1, 2],
        "warmup_epochs": _TRAIN.warmup_epochs,
        "pretrained": _TRAIN.pretrained,
        "n_boot": 1000,
    },
}
"""``python -m maskdet ablate --preset``: ``smoke`` (tests), ``small`` (a 2-core CPU),
``full`` (a GPU)."""


def _literal(value: Any) -> str:
    """A parameter's value as Python source, as ruff formats it (double-quoted strings)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


PRESET_LINE = (
    'PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; '
    'or "demo" | "full"'
)

"""The first line of every parameters cell."""


LINE_LENGTH = 100
"""ruff's line length: a longer parameter line is split so that the formatter leaves it."""


def notebook_params(names: list[str]) -> str:
    """A notebook's parameters cell: ``PRESET`` first, then ``NAME = value  # what it means``
    for each of ``names``. A value that ``demo`` and ``full`` share is written out (``smoke``,
    for CI, is passed whole by ``maskdet run``); one that differs is ``None``, taken from
    ``PRESET`` by :func:`maskdet.pipeline.use_preset`, with both values in the comment: each
    value is written once, in :data:`RUN_PRESETS`."""
    lines = [PRESET_LINE]
    for name in names:
        if name == "PRESET":
            continue
        demo, full = RUN_PRESETS["demo"][name], RUN_PRESETS["full"][name]
        notes = [PARAM_NOTES[name]] if name in PARAM_NOTES else []
        if demo == full:
            value = _literal(demo)
        else:
            value = "None"
            notes.append(f"demo: {_literal(demo)}, full: {_literal(full)}")
        line = f"{name} = {value}" + (f"  # {'; '.join(notes)}" if notes else "")
        if len(line) > LINE_LENGTH and len(notes) > 1:  # the meaning above, the values beside
            line = f"# {notes[0]}\n{name} = {value}  # {notes[1]}"
        lines.append(line)
    return "\n".join(lines)


def _plain_type(hint: Any) -> tuple[type, bool]:
    """(the option's type, whether None is allowed) for a type hint such as ``int | None``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        return (kinds[0] if kinds[0] in (bool, int, float) else str), type(None) in args
    return (hint if hint in (bool, int, float) else str), False


def parameters(target: type | Callable) -> list[tuple[str, type, Any, dict]]:
    """(name, type, default, metadata) of a dataclass's fields or a function's keyword
    parameters (metadata: the fields' ``opt`` help and choices; empty for functions)."""
    hints = typing.get_type_hints(target)
    if dataclasses.is_dataclass(target):
        return [
            (f.name, _plain_type(hints[f.name])[0], f.default, dict(f.metadata))
            for f in dataclasses.fields(target)
        ]
    sig = inspect.signature(target)
    return [
        (name, _plain_type(hints[name])[0], p.default, {})
        for name, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty
    ]


def add_options(
    parser: argparse.ArgumentParser,
    target: type | Callable,
    help: dict[str, str] | None = None,
    choices: dict[str, tuple] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """One ``--option`` per field or keyword parameter of ``target`` (``snake_case`` ->
    ``--kebab-case``); booleans get ``--x/--no-x``. ``help``/``choices`` add to the fields' own."""
    for name, kind, default, meta in parameters(target):
        if name in skip:
            continue
        text = (help or {}).get(name) or meta.get("help") or None
        allowed = (choices or {}).get(name) or meta.get("choices")
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            parser.add_argument(
                flag,
                type=count(meta.get("min", 0)) if kind is int else kind,
                default=default,
                help=text,
                choices=list(allowed) if allowed else None,
            )


def options_of(target: type | Callable, namespace: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of ``target``'s options, as keyword arguments for it."""
    names = {name for name, *_ in parameters(target)}
    return {k: v for k, v in vars(namespace).items() if k in names}
