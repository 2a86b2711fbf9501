"""Faults and misuse with real processes (issue 12, B.4-B.6): kill -9 in the middle of a stage,
its pool workers, two runs on one folder at once; and the rerun after a kill gives the same
files as a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maskdet.core import guard
from maskdet.core.manifest import read_manifest, usable

from .conftest import ROOT

LFW_MINI_ARGS = ["--limit-identities", "60", "--workers", "2"]


def maskdet(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskdet", *args]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        maskdet(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check, timeout: float = 240.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def files(folder: Path) -> dict[str, bytes]:
    skip = ("raw/", ".maskdet.lock", "stage01.json", "cache/", ".stage01.partial/")
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)
    }


def kill_when(proc: subprocess.Popen, ready, what: str) -> list[int]:
    """kill -9 ``proc`` once ``ready()``; returns its worker processes (alive at the kill)."""
    wait_for(lambda: ready() or proc.poll() is not None, what=what)
    assert proc.poll() is None, f"finished before the kill: {proc.communicate()}"
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return workers


@pytest.mark.slow
def test_kill_9_of_stage_01_leaves_the_old_data_dir_whole_and_the_rerun_identical(
    tmp_path, lfw_mini
):
    data, clean = tmp_path / "data", tmp_path / "clean"
    first = subprocess.run(
        maskdet("download", "--source", str(lfw_mini), "--out", str(data), *LFW_MINI_ARGS),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    before = files(data)
    args = ("download", "--source", str(lfw_mini), "--seed", "1", *LFW_MINI_ARGS)
    proc = start(*args, "--out", str(data))
    workers = kill_when(
        proc,
        lambda: any(data.rglob(".stage01.partial/*/*/*.png")) or len(files(data)) != len(before),
        "the first new face",
    )
    assert workers, "stage 01 ran without worker processes"
    wait_for(lambda: not any(alive(w) for w in workers), 20, "the workers to end with their parent")
    # the DATA_DIR is the previous one, whole: every face it lists is there and unchanged
    assert files(data) == before
    rows = read_manifest(data)
    assert all((data / r["path"]).is_file() for r in usable(rows))
    synth = subprocess.run(
        maskdet("synthesize", "--data", str(data), "--backend", "builtin", "--workers", "1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert synth.returncode == 0 and '"failed": 0' in synth.stdout, synth.stdout + synth.stderr
    # rerun the killed command: the same files as a run that was never stopped
    for out in (data, clean):
        run = subprocess.run(
            maskdet(*args, "--out", str(out)), cwd=ROOT, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
    assert files(data) == files(clean)


@pytest.mark.slow
def test_a_second_run_on_a_data_dir_in_use_is_refused_naming_the_holder(tmp_path, lfw_mini):
    data = tmp_path / "data"
    proc = start("download", "--source", str(lfw_mini), "--out", str(data), *LFW_MINI_ARGS)
    lock = data / guard.LOCK_NAME
    wait_for(
        lambda: (
            lock.exists() and lock.read_text().startswith(str(proc.pid)) or proc.poll() is not None
        ),
        what="the lock",
    )
    os.kill(proc.pid, signal.SIGSTOP)  # the first run holds the lock while the others try
    try:
        assert proc.poll() is None, "stage 01 finished before the others started"
        second = subprocess.run(
            maskdet("synthesize", "--data", str(data), "--backend", "builtin"),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        third = subprocess.run(
            maskdet("download", "--source", str(lfw_mini), "--out", str(data), "--seed", "3"),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    for other in (second, third):
        assert other.returncode == 1, other.stdout + other.stderr
        assert f"in use by process {proc.pid}" in other.stderr and "Traceback" not in other.stderr
    rows = read_manifest(data)  # the first run's result, not overwritten
    assert len(usable(rows)) > 0 and all((data / r["path"]).is_file() for r in usable(rows))
    assert '"written"' in out and not list(data.glob("*/wearing_mask"))


def test_an_incomplete_data_dir_is_refused_by_every_later_stage(masked_mini, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(masked_mini, data)
    guard.mark_incomplete(data, "stage 01 (notebook 01_download)")
    with pytest.raises(
        RuntimeError, match="incomplete: stage 01 .* was stopped before it finished"
    ):
        read_manifest(data)
    guard.clear_incomplete(data)
    assert read_manifest(data)


def test_the_lock_is_shared_by_readers_and_reentrant(tmp_path):
    folder = tmp_path / "d"
    with guard.locked(folder, "writer"):
        with guard.locked(folder, "again"):  # the same process: re-entrant
            pass
    with guard.locked(folder, "reader", shared=True), guard.locked(folder, "reader 2", shared=True):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from maskdet.core.guard import locked\n"
            f"with locked({str(folder)!r}, 'a test'):\n print('held', flush=True); time.sleep(3600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(guard.FolderBusy, match=f"in use by process {holder.pid} \\(a test"):
        with guard.locked(folder, "me", shared=True):
            pass
    os.kill(holder.pid, signal.SIGKILL)  # a killed holder frees the lock at once
    holder.wait()
    with guard.locked(folder, "me"):
        pass


@pytest.mark.slow
def test_kill_9_of_stage_02_is_refused_downstream_and_the_rerun_resumes_to_the_same_bytes(
    tmp_path, lfw_mini
):
    import shutil

    from maskdet.faces.data import download_and_prepare

    faces, data, clean = tmp_path / "faces", tmp_path / "data", tmp_path / "clean"
    download_and_prepare(str(lfw_mini), faces, limit_identities=60, progress=False)
    for d in (data, clean):
        shutil.copytree(faces, d)
    args = ("synthesize", "--backend", "builtin", "--workers", "2")
    proc = start(*args, "--data", str(data))
    masks = lambda: len(list(data.glob("*/wearing_mask/*.png")))  # noqa: E731
    record = data / "stage02.jsonl"
    recorded = lambda: record.exists() and len(record.read_text().splitlines()) > 10  # noqa: E731
    workers = kill_when(proc, recorded, "ten recorded masks")
    assert workers, "stage 02 ran without worker processes"
    wait_for(lambda: not any(alive(w) for w in workers), 20, "the workers to end with their parent")
    written = masks()
    time.sleep(1.0)
    assert masks() == written, "workers went on writing after their parent was killed"
    # every later stage refuses the half-made DATA_DIR, with the stage to run again
    refused = subprocess.run(
        maskdet("train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "incomplete: stage 02" in refused.stderr and "synthesize --data" in refused.stderr
    # stage 01 run again (notebook Run all) keeps its faces and the marker: stage 02 resumes
    again = download_and_prepare(str(lfw_mini), data, limit_identities=60, progress=False)
    assert again.get("kept") is True
    resumed = subprocess.run(
        maskdet(*args, "--data", str(data)), cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert '"kept_from_before": 0' not in resumed.stdout, resumed.stdout
    fresh = subprocess.run(
        maskdet(*args, "--data", str(clean)), cwd=ROOT, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr
    # the records and stage 02's summary describe the run (its timing, what it kept), not its output
    skip = ("stage01.json", "stage02.jsonl", "stage02.json")
    assert {k: v for k, v in files(data).items() if k not in skip} == {
        k: v for k, v in files(clean).items() if k not in skip
    }
    rows = read_manifest(data)
    assert all((data / r["path"]).is_file() for r in usable(rows))


def test_a_second_training_on_a_run_dir_in_use_is_refused_naming_the_holder(masked_mini, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from maskdet.core.guard import locked\n"
            f"with locked({str(run)!r}, 'training'):\n print('held', flush=True); time.sleep(3600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            maskdet("train", "--data", str(masked_mini), "--out", str(run), "--epochs", "1"),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"in use by process {holder.pid} (training" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (run / "last.pt").exists()
