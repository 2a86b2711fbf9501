"""The deployment subcommands of ``python -m maskdet``: ``predict`` (face crops or photos to a
CSV), ``kiosk`` (a video or camera stream) and ``export`` (ONNX + TorchScript), their options
and what each runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .cli_common import print_json
from .core.guard import check_output
from .core.inference import MaskClassifier
from .deploy.detect import DETECT_SIZE, DETECTORS, FaceDetector
from .deploy.export import export_model
from .deploy.kiosk import KioskError, run_kiosk
from .deploy.predict import iter_predictions, write_rows
from .training import config
from .training.config import count

OVERWRITE_HELP = "replace an existing output that maskdet did not write (never an input)"


def cmd_predict(a: argparse.Namespace) -> int:
    """``predict``: one CSV row per face; exit 1 when no input image was found, 2 when --out
    cannot be written."""
    inputs = [*a.paths, a.checkpoint]
    try:
        check_output(a.out, inputs, a.overwrite)
    except OSError as err:
        print(f"predict: cannot write --out {a.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    detector = FaceDetector(a.detector, detect_size=DETECT_SIZE["photo" if a.photos else "crop"])
    rows = iter_predictions(
        MaskClassifier(a.checkpoint),
        a.paths,
        photos=a.photos,
        detector=detector,
        threshold=a.threshold,
        batch_size=a.batch_size,
        progress=True,
    )
    counts = write_rows(a.out, rows, inputs, a.overwrite)
    print_json({"out": a.out, **{k: v for k, v in counts.items() if k != "rows"}})
    if not counts["images"]:
        print(f"predict: no input image found in {' '.join(a.paths)}", file=sys.stderr)
        return 1
    return 0


def cmd_kiosk(a: argparse.Namespace) -> int:
    """``kiosk``: run the stream, print its summary; exit 1 when it cannot start or ends early."""
    try:
        summary = run_kiosk(
            a.camera if a.video is None else a.video,
            a.model,
            out=a.out,
            log=a.log,
            detector=FaceDetector(a.detector, detect_size=a.detect_size),
            threads=a.threads,
            classify_every=a.classify_every,
            max_frames=a.max_frames,
            show=a.show,
            overwrite=a.overwrite,
        )
    except KioskError as err:
        print(f"kiosk: {err}", file=sys.stderr)
        return 1
    summary.pop("ms")
    print_json(summary)
    if summary["ended_early"]:
        print(f"kiosk: {summary['ended_early']}", file=sys.stderr)
        return 1
    return 0


def cmd_export(a: argparse.Namespace) -> None:
    """``export``: the checkpoint in the asked formats (default both), with their parity check."""
    formats = tuple(a.format or ("onnx", "torchscript"))
    print_json(export_model(a.checkpoint, a.out, formats, int8_data=a.int8, overwrite=a.overwrite))


def add_deploy_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``predict``, ``kiosk`` and ``export`` subparsers, made by ``command(name, help=...)``."""
    pr = command("predict", help="classify face crops, or faces in photos with --photos")
    pr.add_argument("paths", nargs="+", help="image files and/or folders (walked)")
    pr.add_argument(
        "--checkpoint", required=True, help="best.pt, or an exported model.onnx / model.ts"
    )
    pr.add_argument("--out", default="preds.csv", help="the CSV to write (never an input)")
    pr.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    pr.add_argument("--photos", action="store_true", help="detect every face in each photo first")
    pr.add_argument(
        "--threshold", type=config.probability, default=None, help="0-1 (default: the checkpoint's)"
    )
    pr.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DETECTORS[0],
        help="yunet (fast); mtcnn (the former default, slower); hog (baseline)",
    )
    pr.add_argument("--batch-size", type=count(1), default=32, help="faces classified at once")
    pr.set_defaults(func=cmd_predict)

    k = command("kiosk", help="masks in a video or camera stream: tracked, logged, drawn")
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", default=None, help="a video file")
    src.add_argument("--camera", type=int, default=None, help="a camera index (OpenCV)")
    k.add_argument(
        "--model", required=True, help="model.int8.onnx or model.onnx (export), or best.pt"
    )
    k.add_argument("--out", default=None, help="annotated video (.mp4 or .avi)")
    k.add_argument("--log", default="kiosk.jsonl", help="JSON lines: decisions, tracks, summary")
    k.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    k.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    k.add_argument(
        "--detect-size", type=count(1), default=DETECT_SIZE["frame"], help="YuNet: long side (px)"
    )
    k.add_argument("--threads", type=count(1), default=2, help="ONNX Runtime threads")
    k.add_argument(
        "--classify-every",
        type=count(1),
        default=1,
        help="1: every face of every frame; N: a tracked face every N frames (faster)",
    )
    k.add_argument("--max-frames", type=count(1), default=None)
    k.add_argument("--show", action="store_true", help="a live window, where there is a display")
    k.set_defaults(func=cmd_kiosk)

    x = command("export", help="ONNX + TorchScript with a parity check")
    x.add_argument("--checkpoint", required=True, help="best.pt of a training run")
    x.add_argument("--out", required=True, help="folder for model.onnx, model.ts, model.json")
    x.add_argument(
        "--format",
        action="append",
        choices=["onnx", "torchscript"],
        default=None,
        help="repeatable; default both",
    )
    x.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    x.add_argument(
        "--int8",
        metavar="DATA_DIR",
        default=None,
        help="also write model.int8.onnx (faster on CPUs), calibrated on DATA_DIR's val faces and "
        "compared with the float model on its test faces",
    )
    x.set_defaults(func=cmd_export)
