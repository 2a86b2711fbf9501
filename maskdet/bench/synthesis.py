"""``python -m maskdet bench synthesis``: masked faces per second of upstream MaskTheFace's own
CLI (the baseline), the patched driver and the builtin renderer, on the same faces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from masktheface_patch import find_masktheface_dir

from ..synthesis.landmarks import cache_dir, landmark_model_path
from ..synthesis.masking import forget_models
from ..synthesis.synthesis import synthesize_dataset
from .common import unmasked_faces


def _run_upstream_cli(mdir: Path, data: Path, work: Path) -> tuple[int, int, float]:
    """Unmodified ``mask_the_face.py`` on a folder of the faces: (in, out, seconds)."""
    folder = work / "upstream_in"
    folder.mkdir()
    n = 0
    for p in sorted(data.glob("*/not_wearing_mask/*.png")):
        shutil.copyfile(p, folder / p.name)
        n += 1
    shadow = work / "upstream"  # checkout mirrored by links, plus the local landmark model
    shadow.mkdir()
    for entry in mdir.iterdir():
        if entry.name not in (".git", "dlib_models"):
            (shadow / entry.name).symlink_to(entry)
    (shadow / "dlib_models").mkdir()
    (shadow / "dlib_models" / "shape_predictor_68_face_landmarks.dat").symlink_to(
        landmark_model_path()
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "mask_the_face.py", "--path", str(folder), "--mask_type", "random"],
        cwd=shadow,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"upstream CLI failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    out = Path(str(folder) + "_masked")
    return n, len(list(out.glob("*.png"))) if out.exists() else 0, seconds


def bench_synthesis(
    data: str | None = None,
    source: str | None = None,
    images: int = 200,
    masktheface_dir: str | None = None,
) -> list[dict]:
    """Images/s of the upstream CLI, the patched driver and the builtin renderer on the same
    ``images`` stage-01 faces (from ``data``, else from ``source``)."""
    work = Path(tempfile.mkdtemp(prefix="bench_synthesis_"))
    try:
        data = unmasked_faces(work, data, source, images)
        mdir = find_masktheface_dir(masktheface_dir)
        table: list[dict] = []
        if mdir:
            n_in, n_out, sec = _run_upstream_cli(mdir, data, work)
            table.append(
                {"method": "upstream mask_the_face.py (random)", "in": n_in, "out": n_out, "s": sec}
            )
        runs = [("masktheface", w) for w in (1, 2)] if mdir else []
        runs += [("builtin", w) for w in (1, 2)]
        for backend, w in runs:
            forget_models()  # every run pays for loading its models, as the upstream CLI does
            t0 = time.perf_counter()
            res = synthesize_dataset(
                data,
                backend=backend,
                masktheface_dir=mdir,
                workers=w,
                progress=False,
                resume=False,
            )
            sec = time.perf_counter() - t0
            name = "patched driver" if backend == "masktheface" else "builtin renderer"
            table.append(
                {
                    "method": f"{name}, {w} worker{'s' * (w > 1)}",
                    "in": res["images_in"],
                    "out": res["masked"],
                    "s": sec,
                    "note": f"dropped {res['dropped']}, failed {res['failed']}, fallback {res['fallback_box']}",
                }
            )
        base = table[0]["out"] / table[0]["s"] if mdir and table[0]["out"] else None
        print(
            f"\n{'method':38} {'in':>5} {'out':>5} {'seconds':>8} {'img/s':>7} {'vs upstream':>11}  note"
        )
        for row in table:
            ips = row["out"] / row["s"] if row["s"] else 0.0
            ratio = f"{ips / base:.1f}x" if base else "-"
            print(
                f"{row['method']:38} {row['in']:5d} {row['out']:5d} {row['s']:8.2f} {ips:7.1f} {ratio:>11}  "
                f"{row.get('note', '')}"
            )
        print(
            f"({os.cpu_count()} CPUs; times include process start and model loading; dlib's "
            f"frontal detector loads from its serialized copy in {cache_dir()}, written by the "
            "first run on a machine)"
        )
        return table
    finally:
        shutil.rmtree(work, ignore_errors=True)
