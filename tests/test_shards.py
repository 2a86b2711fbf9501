"""Stage 02 in shards (issue 19) on real lfw-mini faces and the builtin renderer: N = 3 shards
merged are byte for byte one job; a shard killed with kill -9 resumes alone to the same bytes; a
merge with a shard missing, duplicated, unfinished or made with other settings is refused in one
line, and leaves the shards as they were."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from maskdet.__main__ import main
from maskdet.core.manifest import (
    MANIFEST_NAME,
    STAGE02_RECORD,
    STAGE02_SUMMARY,
    read_manifest,
    write_manifest,
)
from maskdet.synthesis.shards import SHARDS_DIR, Shard, ShardError
from maskdet.synthesis.synthesis import synthesize_dataset

from .conftest import ROOT
from .test_cli_errors import one_error_line
from .test_faults import alive, kill_when, maskdet, start, wait_for

OPTIONS = dict(backend="builtin", hard_negatives=0.3, progress=False)
CLI_OPTIONS = ["synthesize", "--backend", "builtin", "--hard-negatives", "0.3"]
NOT_OUTPUT = (STAGE02_RECORD, STAGE02_SUMMARY, ".maskdet.lock")  # the summary: see summary_of


def outputs(data: Path) -> dict[str, bytes]:
    """Every file stage 02 leaves in ``data`` (its own record and the lock aside)."""
    return {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in sorted(data.rglob("*"))
        if p.is_file() and p.name not in NOT_OUTPUT and "raw" not in p.parts
    }


def summary_of(data: Path) -> dict:
    """``stage02.json`` without its timings (a merge adds up the shards' seconds)."""
    summary = json.loads((data / STAGE02_SUMMARY).read_text())
    return {k: v for k, v in summary.items() if "second" not in k and "per_s" not in k}


def made(data: Path) -> set[str]:
    """The images stage 02 wrote: masked twins and occluded copies."""
    return {p.relative_to(data).as_posix() for p in data.glob("*/*/*.png") if ".occ." in p.name} | {
        p.relative_to(data).as_posix() for p in data.glob("*/wearing_mask/*.png")
    }


@pytest.fixture(scope="module")
def one_job(tmp_path_factory, mini_data) -> Path:
    """lfw-mini (150 people) through stage 02 in one job."""
    data = tmp_path_factory.mktemp("one") / "data"
    shutil.copytree(mini_data, data)
    synthesize_dataset(data, workers=2, **OPTIONS)
    return data


def test_three_shards_merged_are_byte_for_byte_one_job(one_job, mini_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mini_data, data)
    stage01_manifest = (data / MANIFEST_NAME).read_bytes()
    written: list[set[str]] = []
    for k in (1, 2, 3):
        before = made(data)
        summary = synthesize_dataset(data, workers=1, shard=f"{k}/3", **OPTIONS)
        written.append(made(data) - before)
        assert summary["shard"] == f"{k}/3" and summary["images_in"] > 0
        assert (data / MANIFEST_NAME).read_bytes() == stage01_manifest  # the merge writes it
        with pytest.raises(RuntimeError, match="--merge-shards"):
            read_manifest(data)  # training refuses a DATA_DIR whose shards are not merged
    # each shard wrote only its own faces, and together all of one job's
    assert all(written) and sum(map(len, written)) == len(set().union(*written))
    assert set().union(*written) == made(one_job)
    merged = synthesize_dataset(data, workers=1, merge_shards=True, **OPTIONS)
    assert merged["shards"] == 3 and not (data / SHARDS_DIR).exists()
    assert outputs(data) == outputs(one_job)
    assert summary_of(data) == summary_of(one_job)
    one = json.loads((one_job / STAGE02_RECORD).read_text().splitlines()[0])
    assert json.loads((data / STAGE02_RECORD).read_text().splitlines()[0]) == one
    # a whole job after the merge keeps every image: the merged record is stage 02's
    again = synthesize_dataset(data, workers=1, **OPTIONS)
    n = again["images_in"] + again["hard_negatives"]["images_in"]
    assert again["kept_from_before"] == n and outputs(data) == outputs(one_job)


@pytest.mark.slow
def test_a_shard_killed_with_kill_9_resumes_alone_to_the_same_bytes(one_job, mini_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mini_data, data)
    cli = [*CLI_OPTIONS, "--data", str(data), "--workers", "2"]
    record = Shard(2, 3).record(data)
    recorded = lambda: record.exists() and len(record.read_text().splitlines()) > 6  # noqa: E731
    workers = kill_when(start(*cli, "--shard", "2/3"), recorded, "six recorded images")
    wait_for(lambda: not any(alive(w) for w in workers), 20, "the workers to end with the shard")
    assert "finished" not in record.read_text()
    for k in (1, 3):  # the other shards run meanwhile and are not touched by the kill
        synthesize_dataset(data, workers=1, shard=f"{k}/3", **OPTIONS)
    with pytest.raises(ShardError, match=r"shard 2/3 \(.*\) has not finished \(\d+ images"):
        synthesize_dataset(data, merge_shards=True, **OPTIONS)
    resumed = subprocess.run(
        maskdet(*cli, "--shard", "2/3"), cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    kept = re.search(r'"kept_from_before": (\d+)', resumed.stdout)
    assert kept and int(kept[1]) > 0, resumed.stdout
    merged = subprocess.run(
        maskdet(*cli, "--merge-shards"), cwd=ROOT, capture_output=True, text=True
    )
    assert merged.returncode == 0, merged.stderr
    assert outputs(data) == outputs(one_job)


@pytest.fixture()
def three_shards(small_faces, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(small_faces, data)
    for k in (1, 2, 3):
        synthesize_dataset(data, workers=1, shard=f"{k}/3", **OPTIONS)
    return data


def refused(data: Path, capsys, *extra: str) -> str:
    """The one error line of a refused merge (exit 1); the shards stay as they were."""
    before = outputs(data)
    rc = main([*CLI_OPTIONS, "--data", str(data), "--merge-shards", *extra])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith("error: cannot merge the shards"), line
    assert outputs(data) == before
    return line


def test_a_merge_with_a_shard_missing_twice_or_not_synced_is_refused(three_shards, capsys):
    shards = three_shards / SHARDS_DIR
    (shards / "notes").mkdir()
    line = refused(three_shards, capsys)
    assert "notes holds no shard's record" in line, line
    (shards / "notes").rmdir()
    shutil.copytree(shards / "2-of-3", shards / "2-of-3 (1)")  # a copy made by a sync client
    line = refused(three_shards, capsys)
    assert "shard 2/3 is there twice" in line and "2-of-3 (1)" in line, line
    shutil.rmtree(shards / "2-of-3 (1)")
    # an image shard 3 recorded that is not in the folder (yet): a sync still under way
    lines = Shard(3, 3).record(three_shards).read_text().splitlines()[1:]
    entry = next(e for e in map(json.loads, lines) if e.get("result", {}).get("status") == "ok")
    image = three_shards / entry["dest"]
    kept = image.read_bytes()
    image.unlink()
    line = refused(three_shards, capsys)
    assert "shard 3/3" in line and f"finished, but {entry['dest']} is not in" in line, line
    image.write_bytes(kept)
    shutil.rmtree(shards / "2-of-3")
    line = refused(three_shards, capsys)
    assert "shard 2/3 is missing" in line and "--shard 2/3" in line, line
    assert "1/3" not in line and "3/3" not in line, line


def test_a_merge_with_a_shard_made_with_other_settings_is_refused(three_shards, tmp_path, capsys):
    synthesize_dataset(three_shards, workers=1, shard="3/3", **OPTIONS | {"seed": 1})
    line = refused(three_shards, capsys)
    assert "shard 3/3" in line and "other settings: seed 1 (this merge: 0)" in line, line
    assert "1/3" not in line and "2/3" not in line, line
    line = refused(three_shards, capsys, "--look", "legacy")  # the merge's options differ
    assert "shard 1/3" in line and "look 'real' (this merge: 'legacy')" in line, line
    # the same shards beside other faces (one face fewer than the shards were made from)
    other = tmp_path / "other"
    shutil.copytree(three_shards, other)
    rows = read_manifest(other, rewriting="stage 02")
    rows.remove(next(r for r in rows if r["label"] == "not_wearing_mask" and r["status"] == "ok"))
    write_manifest(other, rows)
    line = refused(other, capsys)
    assert "every shard was made from other faces" in line, line


def test_bad_shard_options_are_usage_errors(small_faces, capsys):
    for extra in (["--shard", "4/3"], ["--shard", "0/2"], ["--shard", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main([*CLI_OPTIONS, "--data", str(small_faces), *extra])
        assert exit_.value.code == 2 and "K/N with 1 <= K <= N" in capsys.readouterr().err
    rc = main([*CLI_OPTIONS, "--data", str(small_faces), "--shard", "1/2", "--merge-shards"])
    assert rc == 2 and "give one of the two" in one_error_line(capsys.readouterr().err)
    with pytest.raises(ShardError, match="no shards in"):
        synthesize_dataset(small_faces, merge_shards=True, **OPTIONS)
