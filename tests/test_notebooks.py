"""Every notebook runs top to bottom with the smoke preset (papermill, like `maskdet run`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from maskdet.pipeline import notebooks, run_notebooks


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    result = run_notebooks(
        preset="smoke",
        data_dir=str(tmp / "data"),
        out_dir=str(tmp / "executed"),
        extra={"RUN_DIR": str(tmp / "run")},
    )
    return tmp, result


@pytest.mark.slow
def test_all_notebooks_executed(smoke_run):
    tmp, result = smoke_run
    names = [p.name for p in notebooks()]
    assert names[:2] == ["01_download.ipynb", "02_mask_synthesis.ipynb"]
    assert list(result["seconds"]) == names
    for name in names:
        nb = nbformat.read(tmp / "executed" / name, as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.output_type == "error"
        ]
        assert not errors, (name, errors)


def _shown_lines(cell) -> list[str]:
    """The lines a notebook viewer shows for a cell's streams (``\\r`` redraws folded)."""
    text = {}
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            text[o.name] = text.get(o.name, "") + o.text
    return [line.rsplit("\r", 1)[-1] for t in text.values() for line in t.split("\n")]


@pytest.mark.slow
def test_saved_notebooks_are_clean_and_small(smoke_run):
    import re

    tmp, result = smoke_run
    for name in result["seconds"]:
        path = tmp / "executed" / name
        assert path.stat().st_size < 5e6, (name, path.stat().st_size)
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells for o in c.get("outputs", [])]
        assert not [
            o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        shown = [line for c in nb.cells for line in _shown_lines(c)]
        assert not [line for line in shown if re.search(r"\d+%\|", line)], name  # no bar left
    shown = [
        line
        for c in nbformat.read(tmp / "executed" / "01_download.ipynb", 4).cells
        for line in _shown_lines(c)
    ]
    assert any(re.fullmatch(r"crop faces: \d+ done in \d\d:\d\d", line) for line in shown)
    report = Path(result["report"]).read_text()
    assert "Preset smoke, unlike the assignment: 1 epoch instead of 50" in report
    drawn = "MaskTheFace at commit" if os.environ["MASKTHEFACE_DIR"] else "the builtin renderer"
    assert f"masks by {drawn}" in report  # who drew the masks, as stage 02 recorded it


@pytest.mark.slow
def test_stage_outputs_show_in_the_report(smoke_run):
    tmp, _ = smoke_run
    nb = nbformat.read(tmp / "executed" / "02_mask_synthesis.ipynb", as_version=4)
    images = [
        o for c in nb.cells for o in c.get("outputs", []) if "image/jpeg" in o.get("data", {})
    ]
    assert len(images) >= 2  # the sample grids by mask type and by colour (photos: JPEG)
    manifest = (tmp / "data" / "manifest.csv").read_text()
    assert "wearing_mask" in manifest and ",ok," in manifest


@pytest.mark.slow
def test_stage_started_alone_names_the_stage_to_run_first(tmp_path):
    import papermill as pm

    nb = notebooks("02")[0]
    with pytest.raises(pm.PapermillExecutionError, match="run stage 01 first"):
        pm.execute_notebook(
            str(nb),
            str(tmp_path / "out.ipynb"),
            parameters={"DATA_DIR": str(tmp_path / "empty")},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(nb.parents[1]),
        )


def test_notebooks_in_git_have_no_outputs_and_a_kernelspec():
    for nb_path in notebooks():
        nb = json.loads(nb_path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
        assert "colab-badge.svg" in "".join(nb["cells"][0]["source"])
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


def test_parameters_cells_parse_and_cover_the_presets():
    import re

    import papermill as pm

    from maskdet.training.config import RUN_PRESETS as PRESETS

    declared_anywhere = set()
    for nb_path in notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        names = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", cell.source, flags=re.MULTILINE))
        declared = set(pm.inspect_notebook(str(nb_path)))
        assert names == declared, (nb_path.name, names ^ declared)  # papermill parsed every line
        declared_anywhere |= declared
    for name, preset in PRESETS.items():
        assert set(preset) <= declared_anywhere, (name, set(preset) - declared_anywhere)


def _builder():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_built_notebooks_equal_their_jupytext_sources():
    import jupytext

    builder = _builder()
    assert builder.stale() == []  # parameters cells from the presets, notebooks from the sources
    for src in sorted(builder.SRC.glob("[0-9][0-9]_*.py")):
        cells = jupytext.read(src, fmt="py:percent").cells
        nb = nbformat.read(src.parents[1] / f"{src.stem}.ipynb", as_version=4)
        chapter = [(c.cell_type, c.source) for c in cells[3:]]
        built = [(c.cell_type, c.source) for c in nb.cells[-len(chapter) :]]
        assert built == chapter, src.name
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert params.source == cells[2].source


def test_notebooks_import_only_the_package():
    """Project code reaches a notebook only through maskdet (pandas and IPython's display show
    its tables); the Colab setup cell is the builder's and installs, it does not import code."""
    import ast

    allowed = ("maskdet", "pandas", "IPython.display")
    for src in sorted(_builder().SRC.glob("[0-9][0-9]_*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] == "maskdet" or name in allowed, (src.name, name)
