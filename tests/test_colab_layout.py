"""Run all as on Colab: the six notebooks (smoke preset, papermill through ``python -m maskdet
run``) in a copy of the checkout with no ``../shared`` beside it, every download served by a
local HTTP server: lfw-mini as stage 01's SOURCE URL, the real set and chapter 06's photos through
the download table's mirror variables. CI has no copy of the real set's upstream photos, so the
copy's indexes list test sources of the same format made from real data of ../shared (see
``evalset_helpers``). Every chapter completes, photos are classified in 06 and a real AUC is
printed in 04-06."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from .conftest import LFW_MINI_MD5, ROOT
from .evalset_helpers import photo_source, real_source, serve


def _texts(nb) -> list[str]:
    """Every text output of a notebook (streams and text/plain results), one string per output."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append(o.text)
            elif "text/plain" in o.get("data", {}):
                out.append(o["data"]["text/plain"])
    return out


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory, lfw_mini):
    ws = tmp_path_factory.mktemp("colab")
    repo = ws / "mask-detection"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in listed:
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    src = ws / "served"
    shutil.copy(
        real_source(src / "jol", per_class=10, worn=2), repo / "maskdet/indexes/realdev.csv"
    )
    shutil.copy(photo_source(src / "kaggle"), repo / "maskdet/indexes/photos.csv")
    shutil.copyfile(lfw_mini, src / "lfw-mini.tgz")
    base, handler, httpd = serve(src)
    try:
        proc = _run(repo, ws, base, ["--source", f"{base}lfw-mini.tgz#md5={LFW_MINI_MD5}"])
    finally:
        httpd.shutdown()
    return ws, repo, proc, handler.log


def _run(repo, ws, base: str, args: list[str], out: str = "executed"):
    """``python -m maskdet run --preset smoke`` in the copy, its mirrors at ``base``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MASKDET_", "MASKTHEFACE", "PYTHONPATH", "WANDB"))
    }
    env |= {
        "PYTHONPATH": str(repo),
        "MASKDET_REAL_MIRRORS": base + "jol/",
        "MASKDET_PHOTOS_MIRRORS": base + "kaggle/",
        "MASKDET_CACHE": str(ws / "cache"),
        "WANDB_MODE": "disabled",
    }
    cmd = [sys.executable, "-m", "maskdet", "run", "--preset", "smoke", "--out", str(ws / out)]
    return subprocess.run(
        cmd + args, cwd=repo, env=env, capture_output=True, text=True, timeout=1800
    )


@pytest.mark.slow
def test_run_all_completes_without_shared(colab_run):
    ws, repo, proc, log = colab_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (ws / "shared").exists() and not (repo.parent / "shared").exists()
    assert (repo / "data" / "smoke" / "manifest.csv").is_file()  # the copy's own ROOT was used
    served = {path.split("/")[0] for path, _ in log}
    assert {"lfw-mini.tgz", "jol", "kaggle"} <= served
    names = sorted(p.name for p in (repo / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(names) == 6
    for name in names:
        nb = nbformat.read(ws / "executed" / name, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, (name, errors)


@pytest.mark.slow
def test_real_numbers_in_chapters_04_to_06(colab_run):
    ws, repo, proc, _ = colab_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads((repo / "data" / "realdev" / "build.json").read_text())
    assert built["built"] == built["identical_to_reference"] == 22 and built["missing"] == []
    texts = {
        n: "\n".join(_texts(nbformat.read(ws / "executed" / n, as_version=4)))
        for n in ("04_train_resnet50.ipynb", "05_eval_roc.ipynb", "06_qualitative.ipynb")
    }
    assert "realdev: data/realdev: 10 mask + 10 nomask crops" in texts["04_train_resnet50.ipynb"]
    assert "real/auc" in texts["04_train_resnet50.ipynb"]
    assert not re.search(r"^realdev: +0%\|", texts["04_train_resnet50.ipynb"], re.M)
    metrics = [
        json.loads(line) for line in (repo / "runs/smoke/metrics.jsonl").read_text().splitlines()
    ]
    assert all(math.isfinite(m["real/auc"]) for m in metrics)
    real = json.loads((repo / "runs/smoke/eval_real.json").read_text())
    assert math.isfinite(real["auc"]["auc"]) and real["n"] == 16  # REAL_LIMIT 8 per class
    assert "real faces" in texts["05_eval_roc.ipynb"]  # the side-by-side table: test | real
    assert re.search(r"^auc\s+\d\.\d+\s+\d\.\d+", texts["05_eval_roc.ipynb"], re.M)
    assert "native" in texts["06_qualitative.ipynb"] and "auc" in texts["06_qualitative.ipynb"]


@pytest.mark.slow
def test_photos_downloaded_credited_and_classified_in_06(colab_run):
    ws, repo, proc, _ = colab_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = "\n".join(_texts(nbformat.read(ws / "executed" / "06_qualitative.ipynb", as_version=4)))
    assert "photos: data/photos: 10 real photos" in text
    assert "tests only" in text  # the licence column of the credits table
    assert "prob_mask" in text and "masked_01.jpg" in text  # faces found and classified
    assert "is not a folder" not in text
    assert not re.search(r"^photos: +0%\|", text, re.M)  # no download bar left at 0%


@pytest.mark.slow
def test_nothing_reachable_chapters_04_to_06_still_complete(colab_run):
    """The same copy offline: no built sets, every source unreachable. 04-06 run to the end,
    each saying in one line what it goes without."""
    ws, repo, proc, _ = colab_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("realdev", "photos"):
        shutil.rmtree(repo / "data" / name)
    shutil.rmtree(ws / "cache" / "downloads")
    (repo / "runs/smoke/eval_real.json").unlink()
    offline = _run(repo, ws, "http://127.0.0.1:9/", ["--stages", "04,05,06"], "offline")
    assert offline.returncode == 0, offline.stderr[-3000:]
    texts = {
        p.name: "\n".join(_texts(nbformat.read(p, as_version=4)))
        for p in sorted((ws / "offline").glob("*.ipynb"))
    }
    assert len(texts) == 3
    for name, text in texts.items():
        lines = [line for line in text.splitlines() if line.startswith("no realdev set (")]
        assert len(lines) == 1, name
        assert "no real-mask numbers in this run" in lines[0]
    photos = [t for t in texts["06_qualitative.ipynb"].splitlines() if t.startswith("no photos")]
    assert len(photos) == 1 and "the photo cells are skipped" in photos[0]
