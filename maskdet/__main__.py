"""Command line: ``python -m maskdet SUBCOMMAND`` (the notebooks call the same functions)."""

from __future__ import annotations

import argparse
import json
import sys


def _print(result: object) -> None:
    print(json.dumps(result, indent=2, default=str))


def cmd_download(a: argparse.Namespace) -> None:
    from .data import download_and_prepare

    _print(
        download_and_prepare(
            a.source,
            a.out,
            seed=a.seed,
            limit_identities=a.limit_identities,
            cache_dir=a.cache_dir,
            workers=a.workers,
        )
    )


def cmd_synthesize(a: argparse.Namespace) -> None:
    from .synthesis import copy_faces, synthesize_dataset

    data = copy_faces(a.data, a.out) if a.out else a.data
    _print(
        synthesize_dataset(
            data,
            backend=a.backend,
            masktheface_dir=a.masktheface_dir,
            workers=a.workers,
            seed=a.seed,
        )
    )


def cmd_run(a: argparse.Namespace) -> None:
    from .pipeline import run_notebooks

    _print(
        run_notebooks(
            preset=a.preset,
            source=a.source,
            data_dir=a.data,
            out_dir=a.out,
            stages=a.stages,
            extra=dict(kv.split("=", 1) for kv in a.param),
        )
    )


def cmd_train(a: argparse.Namespace) -> None:
    from .train import train_cli

    train_cli(a)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .evaluate import evaluate_cli

    evaluate_cli(a)


def cmd_predict(a: argparse.Namespace) -> None:
    from .predict import predict_cli

    predict_cli(a)


def cmd_export(a: argparse.Namespace) -> None:
    from .predict import export_cli

    export_cli(a)


def cmd_ablate(a: argparse.Namespace) -> None:
    from .ablate import ablate_cli

    ablate_cli(a)


def cmd_bench(a: argparse.Namespace) -> None:
    if a.what == "synthesis":
        from .synthesis import benchmark

        benchmark(a)
    elif a.what == "loader":
        from .loader import benchmark

        benchmark(a)
    elif a.what == "train":
        from .train import benchmark

        benchmark(a)
    elif a.what == "infer":
        from .predict import bench_infer_cli

        bench_infer_cli(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maskdet", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("download", help="stage 01: get faces, crop, split by identity")
    d.add_argument(
        "--source",
        default="lfw",
        help="lfw | celeba | gdrive:ID_OR_URL | URL | local .tgz/.zip/folder",
    )
    d.add_argument("--out", default="data", help="DATA_DIR")
    d.add_argument("--limit-identities", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--cache-dir", default=None, help="where downloads go (default DATA_DIR/raw)")
    d.add_argument("--workers", type=int, default=None)
    d.set_defaults(func=cmd_download)

    s = sub.add_parser("synthesize", help="stage 02: a masked twin for every face")
    s.add_argument("--data", default="data", help="DATA_DIR")
    s.add_argument(
        "--backend",
        choices=["masktheface", "builtin"],
        default=None,
        help="default: masktheface when an upstream checkout is found, else builtin",
    )
    s.add_argument("--masktheface-dir", default=None)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--out",
        default=None,
        help="write to a new DATA_DIR with the same faces (e.g. the other backend's masks for "
        "the cross-synthesizer ablation) instead of into --data",
    )
    s.set_defaults(func=cmd_synthesize)

    r = sub.add_parser("run", help="execute the notebooks in order with a preset")
    r.add_argument("--preset", choices=["smoke", "demo", "full"], default="demo")
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

    t = sub.add_parser("train", help="train the ResNet-50 (stage 04)")
    try:
        from .train import add_train_args
    except ImportError:  # stage 04 not installed in this checkout
        add_train_args = None
    if add_train_args:
        add_train_args(t)
    t.set_defaults(func=cmd_train)

    from .ablate import add_ablate_args
    from .evaluate import add_evaluate_args
    from .predict import add_export_args, add_predict_args

    e = sub.add_parser("evaluate", help="stage 05: evaluate a run's best checkpoint")
    add_evaluate_args(e)
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("predict", help="classify face crops, or faces in photos with --photos")
    add_predict_args(pr)
    pr.set_defaults(func=cmd_predict)
    x = sub.add_parser("export", help="ONNX + TorchScript with a parity check")
    add_export_args(x)
    x.set_defaults(func=cmd_export)
    ab = sub.add_parser("ablate", help="ablation runs and their table")
    add_ablate_args(ab)
    ab.set_defaults(func=cmd_ablate)

    b = sub.add_parser("bench", help="print throughput numbers")
    b.add_argument("what", choices=["synthesis", "loader", "train", "infer"])
    b.add_argument(
        "--data", default=None, help="DATA_DIR to use (default: a temporary one from --source)"
    )
    b.add_argument(
        "--source",
        default=None,
        help="faces to bench on (default ../shared/data/lfw-deepfunneled.tgz)",
    )
    b.add_argument("--images", type=int, default=200)
    b.add_argument("--masktheface-dir", default=None)
    b.add_argument("--device", default=None)
    b.add_argument("--batches", type=int, default=None)
    b.add_argument(
        "--rounds", type=int, default=None, help="bench loader and train: repeats (median)"
    )
    b.add_argument(
        "--checkpoint", default=None, help="bench infer: best.pt (default: random-init --arch)"
    )
    b.add_argument("--arch", choices=["resnet50", "resnet18"], default="resnet50")
    b.add_argument("--batch-size", type=int, default=64, help="bench train: images per step")
    b.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bench train: include the torch.compile settings on CUDA (minutes of compilation)",
    )
    b.add_argument("--threads", type=int, default=2)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
