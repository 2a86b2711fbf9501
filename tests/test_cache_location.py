"""Where the cached loader keeps its decoded images (issue 12 B.9): DATA_DIR/cache by default,
``cache_dir`` or ``MASKDET_CACHE`` when given, and ``~/.cache/maskdet`` with a notice when
DATA_DIR cannot be written. Real faces (lfw-mini through stages 01 and 02), a DATA_DIR made
read-only for real (no write permission, or the immutable flag where the tests run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from maskdet.loading.cache import CACHE_ENV, cache_location
from maskdet.loading.loader import make_loaders


@contextmanager
def read_only(folder: Path):
    """``folder`` cannot take new files while the block runs."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    else:  # root writes anywhere: the immutable flag stops it too
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot make a folder read-only here (no chattr +i as root)")
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    try:
        yield
    finally:
        undo()


def _copy(masked_mini: Path, dest: Path) -> Path:
    shutil.copytree(masked_mini, dest, ignore=shutil.ignore_patterns("cache"))
    return dest


def _first_batch(data: Path, **kw) -> np.ndarray:
    loader = make_loaders(data, 8, "cached", workers=0, splits=("val",), **kw)["val"]
    return next(iter(loader)).images.numpy()


def test_a_read_only_data_dir_caches_in_the_home_cache_with_a_notice(
    masked_mini, tmp_path, monkeypatch, capsys
):
    data = _copy(masked_mini, tmp_path / "data")
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    expected = _first_batch(_copy(masked_mini, tmp_path / "writable"))
    with read_only(data):
        with pytest.raises(OSError):
            (data / "probe").write_text("x")  # really read-only
        got = _first_batch(data)
    assert np.array_equal(got, expected)
    assert not (data / "cache").exists()
    made = list((tmp_path / "home-cache" / "maskdet").glob("data-*/val-*.u8"))
    assert len(made) == 1
    notice = capsys.readouterr().out
    assert f"{data} is read-only" in notice and CACHE_ENV in notice and "--cache-dir" in notice


def test_the_cache_goes_where_it_is_told_and_each_data_dir_gets_its_own(
    masked_mini, tmp_path, monkeypatch
):
    a, b = _copy(masked_mini, tmp_path / "a"), _copy(masked_mini, tmp_path / "b")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    _first_batch(a)
    _first_batch(b, cache_dir=str(tmp_path / "opt"))
    assert not (a / "cache").exists() and not (b / "cache").exists()
    assert len(list((tmp_path / "env").glob("a-*/val-*.u8"))) == 1
    assert len(list((tmp_path / "opt").glob("b-*/val-*.u8"))) == 1
    assert cache_location(a) != cache_location(b)  # same relative paths, separate caches
    monkeypatch.delenv(CACHE_ENV)
    assert cache_location(a) == a / "cache"


def test_an_unwritable_cache_location_is_one_clear_error(masked_mini, tmp_path):
    target = tmp_path / "cache-here"
    target.mkdir()
    with read_only(target), pytest.raises(OSError, match="cannot be written: choose another"):
        cache_location(masked_mini, target)
