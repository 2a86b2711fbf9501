"""Command line: ``python -m maskdet SUBCOMMAND`` (the notebooks call the same functions).

This is the only place that reads options: each subcommand turns its arguments into one call of
a typed function of the package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .bench.infer import bench_infer
from .bench.kiosk import bench_kiosk
from .bench.loader import bench_loader
from .bench.synthesis import bench_synthesis
from .bench.train import bench_train
from .cli_common import name_value, print_json, shard_type
from .cli_deploy import add_deploy_commands
from .core.constants import SPLITS
from .core.errors import UsageError, escape_unwritable, one_line
from .core.model import ARCHS
from .evaluation.ablate import EXPERIMENTS, run_ablations, summarize
from .evaluation.evalsets import build_photos, build_realdev
from .evaluation.evaluate import evaluate_real, evaluate_run, headline
from .evaluation.worn import worn_table
from .faces.data import download_and_prepare
from .pipeline import run_notebooks
from .synthesis.renderers import MASK_BACKENDS
from .synthesis.synthesis import copy_faces, synthesize_dataset
from .training import config
from .training.config import (
    ABLATION_PRESETS,
    RUN_PRESETS,
    TrainConfig,
    add_options,
    count,
    options_of,
)
from .training.sinks import WANDB_MODES
from .training.train import train


def cmd_download(a: argparse.Namespace) -> None:
    print_json(
        download_and_prepare(
            a.source,
            a.out,
            seed=a.seed,
            limit_identities=a.limit_identities,
            cache_dir=a.cache_dir,
            workers=a.workers,
            force=a.force,
        )
    )


def cmd_synthesize(a: argparse.Namespace) -> None:
    if a.out and (a.shard or a.merge_shards):
        raise UsageError("--out makes a new DATA_DIR in one job: shard --data itself instead")
    data = copy_faces(a.data, a.out) if a.out else a.data
    print_json(
        synthesize_dataset(
            data,
            backend=a.backend,
            masktheface_dir=a.masktheface_dir,
            workers=a.workers,
            seed=a.seed,
            look=a.look,
            hard_negatives=a.hard_negatives,
            resume=not a.no_resume,
            shard=a.shard,
            merge_shards=a.merge_shards,
        )
    )


def cmd_run(a: argparse.Namespace) -> None:
    print_json(
        run_notebooks(
            preset=a.preset,
            source=a.source,
            data_dir=a.data,
            out_dir=a.out,
            stages=a.stages,
            extra=dict(name_value(kv) for kv in a.param),
        )
    )


def cmd_train(a: argparse.Namespace) -> None:
    summary = train(TrainConfig(**options_of(TrainConfig, a)))
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 alone reports
        print_json({k: v for k, v in summary.items() if k != "last"})


def cmd_evaluate(a: argparse.Namespace) -> None:
    if a.real:
        r = evaluate_real(
            a.run,
            a.real,
            a.checkpoint,
            a.bootstrap,
            a.seed,
            a.wandb,
            device=a.device,
            limit=a.limit,
        )
        print_json(
            {
                "real": a.real,
                "counts": r["counts"],
                **headline(r),
                "framings": {k: round(v["auc"], 4) for k, v in r["framings"].items()},
                "skipped": len(r["skipped_images"]),
                "figures": r["figures"],
                "json": str(Path(a.run) / "eval_real.json"),
            }
        )
        if "worn_wrong" in r:
            print(worn_table(r["worn_wrong"]))
        return
    r = evaluate_run(
        a.run,
        a.split,
        a.data,
        a.checkpoint,
        a.limit,
        a.bootstrap,
        a.seed,
        a.wandb,
        device=a.device,
    )
    print_json(
        {
            "split": r["split"],
            "n": r["n"],
            **headline(r),
            "figures": r["figures"],
            "json": str(Path(a.run) / f"eval_{a.split}.json"),
        }
    )


def cmd_ablate(a: argparse.Namespace) -> None:
    rows = run_ablations(
        a.data,
        a.out,
        a.preset,
        a.other_data,
        tuple(a.experiments.split(",")),
        a.seeds,
        a.held_out_type,
        a.workers,
        a.device,
        a.real,
        a.masktheface_dir,
    )
    for s in sorted(summarize(rows), key=lambda s: -float(s.get("real_auc_mean", -1))):
        print(json.dumps(s))


BENCHES = {
    "synthesis": (bench_synthesis, "upstream mask_the_face.py vs the patched driver vs builtin"),
    "loader": (bench_loader, "ImageFolder+PIL vs the per-image and the cached loader"),
    "train": (bench_train, "training images/s: model alone vs full pipeline (--ddp: vs DDP)"),
    "infer": (bench_infer, "ms per face at batch 1: PyTorch, TorchScript, ONNX Runtime, int8"),
    "kiosk": (bench_kiosk, "kiosk frames/s (MTCNN + PyTorch vs YuNet + ONNX) and predict faces/s"),
}


BENCH_HELP = {
    "data": "DATA_DIR to use (default: a temporary one made from --source)",
    "source": "faces to bench on (default ../shared/data/lfw-deepfunneled.tgz)",
    "images": "faces to use (infer: faces timed per engine)",
    "batches": "timed batches per round",
    "rounds": "repeats, taken in turns (the median is reported; kiosk: all frames pooled)",
    "batch_size": "images per step",
    "compile": "include the torch.compile settings on CUDA (minutes of compilation)",
    "ddp": "train: one plain process against torchrun --nproc_per_node NPROC (DDP), in turns",
    "nproc": "train --ddp: ranks under torchrun (1: DDP's own overhead)",
    "checkpoint": "best.pt (default: a random-init --arch)",
    "model_dir": "kiosk: folder with model.onnx and model.int8.onnx (export --int8)",
    "frames": "kiosk: frames per video (0 skips the kiosk table)",
    "photos": "real photos the kiosk videos are made from",
    "crops": "real face crops for the predict comparison (0 skips it)",
    "realdev": "folder of real face crops with labels.csv",
    "classify_every": "the tracking mode's re-classification interval (frames)",
}


def _bench_parsers(command, common: argparse.ArgumentParser) -> None:
    """``bench TARGET``: one subparser per target, with the options of the target's function."""
    b = command("bench", help="print throughput numbers, side by side with a baseline")
    targets = b.add_subparsers(dest="what", required=True)
    for name, (fn, what) in BENCHES.items():
        t = targets.add_parser(name, help=what, parents=[common])
        add_options(t, fn, help=BENCH_HELP, choices={"arch": ARCHS})
        t.set_defaults(func=lambda a, fn=fn: fn(**options_of(fn, a)))


DEBUG_HELP = "show the traceback of a failure (also MASKDET_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maskdet", description=__doc__)
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    common = argparse.ArgumentParser(add_help=False)  # --debug after the subcommand too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    d = command("download", help="stage 01: get faces, crop, split by identity")
    d.add_argument(
        "--source",
        default="lfw",
        help="lfw | celeba | gdrive:ID_OR_URL | URL | local .tgz/.zip/folder",
    )
    d.add_argument("--out", default="data", help="DATA_DIR")
    d.add_argument("--limit-identities", type=count(), default=None)
    d.add_argument("--seed", type=count(), default=0)
    d.add_argument("--cache-dir", default=None, help="where downloads go (default DATA_DIR/raw)")
    d.add_argument("--workers", type=count(), default=None)
    d.add_argument(
        "--force",
        action="store_true",
        help="redo stage 01 even when DATA_DIR already holds it from the same source and settings",
    )
    d.set_defaults(func=cmd_download)

    s = command("synthesize", help="stage 02: a masked twin for every face")
    s.add_argument("--data", default="data", help="DATA_DIR")
    s.add_argument(
        "--backend",
        choices=MASK_BACKENDS,
        default=None,
        help="default: masktheface when an upstream checkout is found, else builtin; mixed: "
        "each image drawn by one of the two at random",
    )
    s.add_argument(
        "--look",
        default="real",
        help="mask appearance: real (real-photo colours, light-following shading, ear loops, "
        "size jitter), legacy (as before), or e.g. real,-loops",
    )
    s.add_argument(
        "--hard-negatives",
        type=float,
        default=0.0,
        help="fraction of faces that also get an occluded unmasked copy (beard, hand, scarf, "
        "collar or microphone over the lower face)",
    )
    s.add_argument("--masktheface-dir", default=None)
    s.add_argument("--workers", type=count(), default=None)
    s.add_argument("--seed", type=count(), default=0)
    s.add_argument(
        "--out",
        default=None,
        help="write to a new DATA_DIR with the same faces (e.g. the other backend's masks for "
        "the cross-synthesizer ablation) instead of into --data",
    )
    s.add_argument(
        "--no-resume",
        action="store_true",
        help="make every mask again (default: keep those a stopped run with the same settings "
        "already wrote)",
    )
    s.add_argument(
        "--shard",
        type=shard_type,
        default=None,
        metavar="K/N",
        help="make only shard K of N (every N-th face) into the shared --data, e.g. one per "
        "machine; the manifest is written by --merge-shards",
    )
    s.add_argument(
        "--merge-shards",
        action="store_true",
        help="check that every shard finished with these options and faces, then write the "
        "manifest (the same bytes as one job)",
    )
    s.set_defaults(func=cmd_synthesize)

    r = command("run", help="execute the notebooks in order with a preset")
    r.add_argument("--preset", choices=list(RUN_PRESETS), default="demo")
    r.add_argument("--source", default=None, help="stage 01 source (default: the preset's)")
    r.add_argument("--data", default=None, help="DATA_DIR (default: data/<preset>)")
    r.add_argument(
        "--out", default=None, help="where executed notebooks go (default runs/<preset>)"
    )
    r.add_argument("--stages", default=None, help="e.g. 01,02 (default: all notebooks present)")
    r.add_argument(
        "--param", action="append", default=[], help="extra notebook parameter NAME=VALUE"
    )
    r.set_defaults(func=cmd_run)

    t = command("train", help="train the ResNet-50 (stage 04)")
    add_options(t, TrainConfig)
    t.set_defaults(func=cmd_train)

    e = command("evaluate", help="stage 05: evaluate a run's best checkpoint")
    e.add_argument("--run", required=True, help="RUN_DIR of a training run (holds best.pt)")
    e.add_argument("--split", default="test", choices=SPLITS)
    e.add_argument(
        "--real",
        default=None,
        help="a folder of real crops (mask/ + nomask/, or labels.csv): evaluate on it instead "
        "of a split (e.g. ../shared/realdev); its worn/ folder (masks worn wrong, "
        "worn/labels.csv path,category) is kept out of the ROC and reported on its own",
    )
    e.add_argument(
        "--data", default=None, help="DATA_DIR (default: the one the run was trained on)"
    )
    e.add_argument("--checkpoint", default="best.pt", help="file name inside RUN_DIR")
    e.add_argument(
        "--limit",
        type=count(),
        default=None,
        help="at most N images of the split (whole twin pairs), or per class of --real",
    )
    e.add_argument(
        "--bootstrap", type=count(), default=1000, help="bootstrap resamples for the AUC interval"
    )
    e.add_argument("--seed", type=count(), default=0)
    e.add_argument("--wandb", choices=WANDB_MODES, default="auto")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=cmd_evaluate)

    add_deploy_commands(command)

    ab = command("ablate", help="ablation runs and their table")
    ab.add_argument("--data", required=True, help="DATA_DIR (stages 01-02 output)")
    ab.add_argument("--out", default="runs/ablations", help="folder for the runs and the tables")
    ab.add_argument("--preset", choices=list(ABLATION_PRESETS), default="small")
    ab.add_argument(
        "--other-data",
        default=None,
        help="DATA_DIR of the same faces masked by the other synthesizer (cross-synthesizer test)",
    )
    ab.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help=f"comma-separated subset of {','.join((*EXPERIMENTS, 'synthesis'))}",
    )
    ab.add_argument(
        "--real",
        default=None,
        help="real crops (mask/ + nomask/, or labels.csv) every run is also evaluated on; the "
        "table is read by real AUC",
    )
    ab.add_argument("--masktheface-dir", default=None, help="for the synthesis experiment")
    ab.add_argument("--seeds", type=config.seed_list, help="e.g. 0,1,2 (default: the preset's)")
    ab.add_argument(
        "--held-out-type", default=None, help="mask type to hold out (default: the most common)"
    )
    ab.add_argument("--workers", type=count(), default=None)
    ab.add_argument("--device", default="auto")
    ab.set_defaults(func=cmd_ablate)

    sets = {
        "realset": (build_realdev, "build the real-mask evaluation set (realdev) from its source"),
        "photoset": (build_photos, "download chapter 06's default photos (CC0) into a folder"),
    }
    for name, (fn, what) in sets.items():
        e = command(name, help=what)
        add_options(
            e,
            fn,
            help={
                "out": "the folder to build (replaced only when it is an earlier build)",
                "source": "a local folder or checkout holding the source's files (no download)",
                "index": "an index CSV of the same columns (default: the package's)",
                "workers": "downloads at a time",
            },
        )
        e.set_defaults(func=lambda a, fn=fn: print_json(fn(**options_of(fn, a))))

    _bench_parsers(command, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A failure prints one line that names the file and the fix (the
    traceback only with ``--debug``): exit 2 for a usage error, 1 for any other failure."""
    escape_unwritable()  # a file name no terminal can show is escaped, never fatal
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on its own usage errors
    debug = args.debug or os.environ.get("MASKDET_DEBUG", "") not in ("", "0")
    try:
        rc = args.func(args)  # an exit status from the commands that have one
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        usage = isinstance(err, UsageError)
        where = f"{parser.prog} {args.cmd}: error" if usage else "error"
        more = "" if debug else "  (--debug shows the traceback)"
        print(f"{where}: {one_line(err)}{more}", file=sys.stderr)
        return 2 if usage else 1
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
