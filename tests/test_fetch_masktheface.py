"""tools/fetch_masktheface.sh (run by tools/setup_env.sh and colab_setup.sh): MaskTheFace at its
pinned commit when the repository answers, one line and the builtin renderer when it does not;
and which checkout stage 02 finds (issue 17, part 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import masktheface_patch
from masktheface_patch import find_masktheface_dir

from .conftest import ROOT

SCRIPT = ROOT / "tools" / "fetch_masktheface.sh"
MTF = os.environ.get("MASKTHEFACE_DIR", "")


def _fetch(dest: Path, repo: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MASKTHEFACE_DIR=str(dest), MASKTHEFACE_REPO=repo, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


def test_unreachable_repository_is_one_line_and_the_builtin_renderer(tmp_path):
    dest = tmp_path / "third_party" / "MaskTheFace"
    proc = _fetch(dest, "http://127.0.0.1:9/MaskTheFace")  # port 9: refused at once
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "the builtin renderer will draw the masks" in lines[0]
    assert "MASKTHEFACE_DIR=" in lines[0] and not dest.exists()


@pytest.mark.skipif(
    not (MTF and (Path(MTF) / ".git").exists()),
    reason="needs a MaskTheFace git clone in MASKTHEFACE_DIR to clone from",
)
def test_clone_at_the_pinned_commit_with_the_landmark_model(tmp_path):
    dest = tmp_path / "MaskTheFace"
    proc = _fetch(dest, MTF)
    assert proc.returncode == 0, proc.stderr
    assert f"MaskTheFace caf4d6c ready in {dest}" in proc.stdout
    head = subprocess.run(["git", "-C", dest, "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == "caf4d6ca2328f6f97c5f1947db4f03b3197fb62a"
    assert (dest / "dlib_models" / "shape_predictor_68_face_landmarks.dat").stat().st_size > 1e6
    assert find_masktheface_dir(dest) == dest.resolve()
    assert _fetch(dest, MTF).stdout == proc.stdout  # a second run changes nothing


def test_masktheface_dir_set_even_empty_is_the_only_place_looked_at(tmp_path, monkeypatch):
    clone = tmp_path / "third_party" / "MaskTheFace"
    clone.mkdir(parents=True)
    (clone / "mask_the_face.py").write_text("")
    monkeypatch.setattr(masktheface_patch, "ROOT", tmp_path)  # a checkout with third_party/
    monkeypatch.delenv("MASKTHEFACE_DIR", raising=False)
    assert find_masktheface_dir() == clone.resolve()  # unset: the setup scripts' clone
    monkeypatch.setenv("MASKTHEFACE_DIR", "")
    assert find_masktheface_dir() is None  # set and empty: the builtin renderer
    monkeypatch.setenv("MASKTHEFACE_DIR", str(tmp_path / "elsewhere"))
    assert find_masktheface_dir() is None
