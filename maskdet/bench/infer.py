"""``python -m maskdet bench infer``: milliseconds per face at batch 1 (PNG decode and
preprocessing included) for eager PyTorch, TorchScript, ONNX Runtime and its int8 model."""

from __future__ import annotations

import functools
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.checkpoint import load_model
from ..core.constants import LFW_MINI
from ..core.imageio import decode_rgb
from ..core.inference import MaskClassifier, Preprocess
from ..core.model import build_model
from ..deploy.export import export_module, quantize_int8
from ..faces.data import crop_aligned
from .common import in_turns


def bench_faces(n: int = 32, data_dir: str | os.PathLike | None = None) -> list[bytes]:
    """PNG bytes of ``n`` real 128x128 face crops: DATA_DIR's test split, or LFW-mini cropped as
    stage 01 does (central 64%)."""
    if data_dir:
        files = sorted((Path(data_dir) / "test").rglob("*.png"))[:n]
        return [f.read_bytes() for f in files]
    out = []
    with tarfile.open(LFW_MINI) as tf:
        for m in tf:
            if len(out) >= n:
                break
            if not (m.isfile() and m.name.lower().endswith(".jpg")):
                continue
            crop = crop_aligned(decode_rgb(tf.extractfile(m).read()))
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, format="PNG", compress_level=6)
            out.append(buf.getvalue())
    return out


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def bench_infer(
    checkpoint: str | None = None,
    arch: str = "resnet50",
    threads: int = 2,
    images: int = 200,
    data: str | None = None,
    warmup: int = 20,
    work_dir: str | None = None,
    quantized: bool = True,
) -> list[dict]:
    """ms per face at batch 1 (``images`` faces per engine): PNG bytes -> decode -> preprocess
    -> probability, printed as a table.

    Engines: eager PyTorch, TorchScript (frozen), ONNX Runtime (all optimisations), and, with
    ``quantized``, ONNX Runtime with static int8 quantisation calibrated on the bench faces
    (reported with its parity; not what ``export`` writes). Without ``checkpoint`` a random-init
    ``arch`` is timed (same cost). Rows also give decode+preprocess alone. All in one run, so the
    numbers compare. Faces: ``data``'s test split, else LFW-mini.
    """
    torch.set_num_threads(threads)
    faces = bench_faces(32, data)
    if checkpoint:
        model, meta = load_model(checkpoint, "cpu")
    else:
        model, _ = build_model(arch, pretrained=False, verbose=False)
        meta = {"arch": arch, "threshold": 0.5}
    model.eval()
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    out = Path(work_dir or tmp.name)
    pre = Preprocess.from_meta(meta)
    parity_x = pre([decode_rgb(b) for b in faces[:16]])
    export_module(model, meta, out, ("onnx", "torchscript"), parity_images=parity_x)
    eager = MaskClassifier.from_model(model, meta | {"threshold": 0.5})
    engines: dict[str, MaskClassifier] = {"pytorch eager": eager}
    engines["torchscript"] = MaskClassifier(out / "model.ts")
    engines["onnxruntime"] = MaskClassifier(out / "model.onnx", threads=threads)
    if quantized:
        quantize_int8(
            out / "model.onnx", out / "model.int8.onnx", pre([decode_rgb(b) for b in faces])
        )
        engines["onnxruntime int8 (static, QDQ)"] = MaskClassifier(
            out / "model.int8.onnx", threads=threads
        )
    ref = eager.probs_from_batch(parity_x)
    for clf in engines.values():
        for i in range(warmup):
            clf.probs_from_batch(pre([decode_rgb(faces[i % len(faces)])]))
    # engines take turns in blocks (rounds), so a busy machine slows them alike; within a block
    # one engine runs alone (thread pools of torch and ONNX Runtime spin-wait after each call
    # and would slow each other if interleaved face by face)
    rounds = 4
    block = max(1, images // rounds)

    def timed_block(clf: MaskClassifier | None, r: int) -> list[float]:
        ms = []
        for i in range(r * block, (r + 1) * block):
            data = faces[i % len(faces)]
            t0 = time.perf_counter()
            x = pre([decode_rgb(data)])
            if clf is not None:
                clf.probs_from_batch(x)
            ms.append((time.perf_counter() - t0) * 1e3)
        return ms

    names = ["decode + preprocess only", *engines]
    runs = in_turns({n: functools.partial(timed_block, engines.get(n)) for n in names}, rounds)
    rows = []
    for name, blocks in runs.items():
        diff = (
            ""
            if name not in engines
            else f"{np.max(np.abs(engines[name].probs_from_batch(parity_x) - ref)):.1e}"
        )
        ms = [t for b in blocks for t in b]
        rows.append({"engine": name, **_percentiles(ms), "max_abs_diff_vs_eager": diff})
    if tmp is not None:
        tmp.cleanup()
    print(
        format_bench(
            rows,
            f"inference, batch 1, {threads} threads, {checkpoint or arch + ' (random init)'} at "
            f"112x112, PNG decode + preprocessing included; torch {torch.__version__}, "
            f"{images} faces per engine",
        )
    )
    return rows


def format_bench(rows: list[dict], title: str) -> str:
    lines = [
        title,
        f"{'engine':30s} {'p50 ms':>8s} {'p95 ms':>8s} {'mean ms':>8s} {'|dp| vs eager':>14s}",
    ]
    for r in rows:
        lines.append(
            f"{r['engine']:30s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['mean_ms']:8.2f} "
            f"{r['max_abs_diff_vs_eager']:>14s}"
        )
    return "\n".join(lines)
