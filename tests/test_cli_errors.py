"""The command line's errors: one line naming the file and the fix, a traceback only with
--debug, exit 2 for usage errors and 1 for failures; damaged checkpoints (issue 12, B.7) and
negative counts (B.10)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from maskdet.__main__ import main
from maskdet.core.checkpoint import CheckpointError, load_checkpoint
from maskdet.core.errors import UsageError
from maskdet.faces.data import split_identities
from maskdet.training.config import TrainConfig

from .conftest import REALDEV, ROOT


def damaged(real_checkpoint, folder):
    """A text file, an empty file and a truncated copy of a real checkpoint."""
    data = real_checkpoint.read_bytes()
    files = {
        "text": b"this is not a checkpoint\n",
        "empty": b"",
        "truncated": data[: len(data) // 2],
    }
    out = {}
    for name, content in files.items():
        out[name] = folder / f"{name}.pt"
        out[name].write_bytes(content)
    return out


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_damaged_checkpoints_give_one_line_naming_the_file_and_the_fix(
    real_checkpoint, tmp_path, capsys
):
    for kind, path in damaged(real_checkpoint, tmp_path).items():
        with pytest.raises(CheckpointError, match="train a model first"):
            load_checkpoint(path)
        out = tmp_path / f"{kind}.csv"
        rc = main(["predict", "--checkpoint", str(path), "--out", str(out), str(REALDEV / "mask")])
        line = one_error_line(capsys.readouterr().err)
        assert rc == 1, kind
        assert str(path) in line and "train a model first" in line, line
    assert load_checkpoint(real_checkpoint)["arch"] == "resnet18"  # the real one still loads


def test_truncated_last_pt_names_no_resume(real_checkpoint, masked_mini, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    data = real_checkpoint.read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])
    argv = ["train", "--data", str(masked_mini), "--out", str(run), "--epochs", "1"]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(run / "last.pt") in line and "--no-resume" in line, line


def test_negative_counts_are_usage_errors(capsys):
    for argv in (
        ["download", "--source", "x", "--limit-identities", "-5"],
        ["train", "--epochs", "0"],
        ["train", "--limit", "-1"],
        ["evaluate", "--run", "x", "--limit", "-3"],
        ["predict", "--checkpoint", "x", "--batch-size", "0", "y"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        assert "or more, got" in capsys.readouterr().err, argv
    with pytest.raises(UsageError, match="epochs must be 1 or more"):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError, match="0 or more"):
        split_identities(["a", "b", "c"], limit=-5)


def test_traceback_only_with_debug(real_checkpoint, tmp_path):
    bad = damaged(real_checkpoint, tmp_path)["text"]
    argv = [
        sys.executable,
        "-m",
        "maskdet",
        "export",
        "--checkpoint",
        str(bad),
        "--out",
        str(tmp_path),
    ]
    plain = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and str(bad) in one_error_line(plain.stderr)
    debug = subprocess.run(
        argv + ["--debug"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and str(bad) in debug.stderr
